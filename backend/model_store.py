"""The user models folder: add a model (Deepness ONNX or Landcover bundle, from a path or URL), remove one.

Adding is atomic. Everything is built under ``<models>/.staging/<pid>-<random>/<key>/`` and renamed to
``<models>/<key>/`` only when complete. The model lookup (:func:`backend.contract.list_models`) reads
``<models>/*.json`` and ``<models>/*/*.json``, never deeper, so nothing in the staging area — a download
in progress, a half-built bundle, a replaced model being deleted — is ever listed, whatever happens to
this process. Staging folders of processes that no longer run are cleaned up by the next add.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.bundle import ModelBundle, bundle_from_dict, load_bundle
from backend.contract import ListedModel, list_models, model_dirs, user_models_dir
from backend.deepness import ImportOptions, model_key, write_deepness_bundle
from backend.download import check_sha256, download, is_url, url_file_name
from backend.errors import InputError, ModelError, OutputError
from backend.onnx_runtime import file_sha256
from backend.progress import Progress

STAGING = ".staging"


@dataclass(frozen=True)
class AddRequest:
    """``models add``: what to add and how.

    Attributes:
        source: a path or an http(s)/file URL of a Deepness ``.onnx`` file or a Landcover bundle ``.json``.
        options: names, classes, pixel size, output and tile size (see :class:`ImportOptions`).
        sha256: the checksum the source file must have.
        replace: replace a user model of the same name instead of refusing.
    """

    source: str
    options: ImportOptions = ImportOptions()
    sha256: str | None = None
    replace: bool = False

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise InputError("name a model file or URL to add")
        object.__setattr__(self, "sha256", check_sha256(self.sha256))


@dataclass(frozen=True)
class AddedModel:
    """The result of an add: the installed bundle and whether it replaced an earlier one."""

    key: str
    bundle: ModelBundle
    replaced: bool = False


def add_model(request: AddRequest, progress: Progress | None = None, root: Path | None = None) -> AddedModel:
    """Add ``request.source`` to the user models folder ``root`` (default :func:`user_models_dir`).

    Raises:
        InputError: the source cannot be found or fetched, the checksum differs, the name is taken.
        ModelError: the file is not a model Landcover can run, or metadata is missing (named option).
        OutputError: the models folder cannot be written.
        KeyboardInterrupt: cancelled; nothing was added.
    """
    progress = progress or Progress()
    root = Path(root) if root is not None else user_models_dir()
    _make_dir(root)
    _clean_stale_staging(root)
    staging = _make_dir(root / STAGING / f"{os.getpid()}-{secrets.token_hex(4)}")
    try:
        source_file, sha = _fetch(request, staging, progress)
        if _is_bundle_json(source_file, request.source):
            return _install_bundle_json(request, source_file, staging, root, progress)
        name = request.options.name or Path(url_file_name(request.source)).stem
        key = model_key(name)
        existing = _check_name(root, key, name, request.replace)
        work = staging / key
        progress.info(f"inspecting {url_file_name(request.source)}")
        options = ImportOptions(name=name, classes=request.options.classes, gsd_m=request.options.gsd_m,
                                output=request.options.output, tile_size=request.options.tile_size)
        # Provenance names where the model came from: the URL, or the absolute path of the file added.
        origin = request.source if is_url(request.source) else str(source_file)
        json_path = write_deepness_bundle(source_file, work, key, options, {"source": origin, "source_sha256": sha})
        load_bundle(json_path)  # exactly what segment will read
        return AddedModel(key, _commit(work, root / key, existing, staging), existing is not None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(request: AddRequest, staging: Path, progress: Progress) -> tuple[Path, str]:
    """The source as a local file (downloaded into ``staging`` for URLs) and its checked SHA-256."""
    if is_url(request.source):
        done = download(request.source, staging / "download.part", progress, request.sha256)
        return done.path, done.sha256
    path = Path(request.source).expanduser()
    if not path.is_file():
        raise InputError(f"model file {path} does not exist; give the path of a .onnx or bundle .json file, "
                         "or an http(s) URL")
    sha = file_sha256(path)
    if request.sha256 is not None and sha != request.sha256:
        raise InputError(f"{path} has SHA-256 {sha}, not the expected {request.sha256} given by --sha256; "
                         "nothing was added")
    return path.resolve(), sha


def _is_bundle_json(path: Path, source: str) -> bool:
    if url_file_name(source).lower().endswith(".json"):
        return True
    with open(path, "rb") as f:
        return f.read(64).lstrip().startswith(b"{")  # ONNX is protobuf: never starts with "{"


def _install_bundle_json(request: AddRequest, json_file: Path, staging: Path, root: Path,
                         progress: Progress) -> AddedModel:
    """Copy a Landcover bundle (its JSON and the files it names) into ``root/<key>/``."""
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{request.source} is not valid JSON ({exc}); give a bundle .json or a Deepness .onnx") \
            from exc
    if not isinstance(data, dict):
        raise ModelError(f"{request.source} is not a bundle JSON object")
    if request.options.name:
        data["name"] = request.options.name
    name = str(data.get("name") or Path(url_file_name(request.source)).stem)
    key = model_key(name)
    existing = _check_name(root, key, name, request.replace)
    work = _make_dir(staging / key)
    for entry in _named_files(data):
        target = work / Path(entry).name
        if is_url(request.source):
            from urllib.parse import urljoin

            download(urljoin(request.source, entry), target, progress)
        else:
            src = json_file.parent / entry
            if src.is_file():
                shutil.copyfile(src, target)
    _rename_named_files(data)
    data.setdefault("provenance", {})
    if isinstance(data["provenance"], dict):
        data["provenance"].setdefault("source", request.source)
    json_path = work / f"{key}.json"
    bundle = bundle_from_dict(data, json_path)  # checks the files are there, as loading will
    bundle.save(json_path)
    load_bundle(json_path)
    return AddedModel(key, _commit(work, root / key, existing, staging), existing is not None)


def _named_files(data: Mapping[str, Any]) -> list[str]:
    files = [str(data["weights"])] if data.get("weights") else []
    onnx = data.get("onnx")
    if isinstance(onnx, dict) and onnx.get("file"):
        files.append(str(onnx["file"]))
    return files


def _rename_named_files(data: dict[str, Any]) -> None:
    """The copies sit beside the JSON: keep only the file names."""
    if data.get("weights"):
        data["weights"] = Path(str(data["weights"])).name
    if isinstance(data.get("onnx"), dict) and data["onnx"].get("file"):
        data["onnx"]["file"] = Path(str(data["onnx"]["file"])).name


def _check_name(root: Path, key: str, name: str, replace: bool) -> ListedModel | None:
    """The user model ``key``/``name`` would replace (None if new); refuse taken names unless ``replace``."""
    clash = None
    for listed in list_models(_dirs(root)):
        if not (listed.key in (key, name) or listed.matches(name)):
            continue
        if listed.origin != "user":
            raise InputError(f"{name!r} is the name of a {listed.origin} model ({listed.path}); choose another "
                             "with --name NAME")
        clash = listed
    if (root / key).exists() and clash is None:
        clash = ListedModel(key, "user", root / key, None, "unreadable")
    if clash is not None and not replace:
        raise InputError(f"a model named {name!r} already exists ({clash.path}); pass --replace to replace it "
                         "or --name to add it under another name")
    return clash


def _commit(work: Path, final: Path, existing: ListedModel | None, staging: Path) -> ModelBundle:
    """Rename the finished ``work`` folder to ``final`` (moving a replaced model into staging first)."""
    try:
        if existing is not None:
            old = existing.path.parent if existing.path.is_file() else existing.path
            if old.resolve() == final.parent.resolve():
                old = existing.path  # a bundle JSON directly in the models folder: move only it
            if old.exists():
                os.replace(old, staging / "replaced")
        os.replace(work, final)
    except OSError as exc:
        raise OutputError(f"cannot install the model into {final} ({exc.strerror or exc}); check the folder's "
                          "permissions") from None
    return load_bundle(final / f"{final.name}.json")


def remove_model(name: str, root: Path | None = None) -> ListedModel:
    """Remove the user model with key or name ``name``; bundled models are refused.

    Raises:
        InputError: no such user model, or it is a bundled one.
    """
    root = Path(root) if root is not None else user_models_dir()
    matches = [m for m in list_models(_dirs(root)) if m.matches(name)]
    user = [m for m in matches if m.origin == "user"]
    if not user:
        if matches:
            raise InputError(f"{name!r} is a {matches[0].origin} model ({matches[0].path}); only models in the "
                             f"user models folder {root} can be removed")
        raise InputError(f"no user model named {name!r} in {root}; list them with 'python -m backend models list'")
    if len(user) > 1:
        raise InputError(f"{name!r} names {len(user)} user models; remove one by its key: "
                         f"{', '.join(m.key for m in user)}")
    listed = user[0]
    folder = listed.path.parent
    trash = _make_dir(root / STAGING / f"{os.getpid()}-{secrets.token_hex(4)}")
    try:
        if folder != root.resolve():
            os.replace(folder, trash / folder.name)  # gone from the listing in one step, then deleted
        else:
            os.replace(listed.path, trash / listed.path.name)  # a bundle JSON directly in the models folder
    except OSError as exc:
        raise OutputError(f"cannot remove {folder} ({exc.strerror or exc}); check the folder's permissions") \
            from None
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return listed


def _dirs(root: Path) -> list[tuple[str, Path]]:
    """The model folders with ``root`` as the user folder."""
    return [(origin, root if origin == "user" else folder) for origin, folder in model_dirs()]


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the models folder {path} ({exc.strerror or exc}); set "
                          "LANDCOVER_MODELS_DIR to a writable folder") from None
    return path


def _clean_stale_staging(root: Path) -> None:
    """Delete staging folders whose process is gone (killed mid-add): they are never listed, only waste space."""
    staging = root / STAGING
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
