"""Build the installable plugin zip: ``python scripts/package_plugin.py dist/landcover_plugin.zip``.

The zip holds one top folder ``landcover_plugin/`` (what QGIS's "Install from ZIP" and plugins.qgis.org expect)
with the plugin code, ``metadata.txt``, the icon, ``LICENSE``, ``README.md`` and the ``backend`` package. The
plugin finds ``backend`` inside itself when installed this way; the worker's requirement lists travel with it in
``backend/requirements/`` (the developer-only ``dev*`` lists, if any, stay out).

Model bundles ship ONNX-only, since the plugin's managed worker runtime is ONNX-only: for each bundle JSON in
``backend/bundles/`` (``<key>/*.json`` or ``*.json``) the zip gets the JSON and one ONNX file, the INT8 export
(``"onnx_int8"``) when there is one, else the float ``"onnx"`` export; never the TensorFlow weights. A bundle
without an ONNX export is left out (with a note).

After writing, the zip is checked against the plugins.qgis.org rules (``scripts/check_plugin_zip.py``): the
report is printed and any error makes this exit 1, keeping the zip for inspection. ``--no-check`` skips that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
TOP = "landcover_plugin"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".part"}
EXTRAS = ("LICENSE", "README.md", "docs/plugin.md", "docs/models.md")  # the docs: what the Help button opens


def _files(root: Path) -> list[Path]:
    """Regular files under ``root``, without caches, hidden paths, compiled Python or symlinks."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in SKIP_SUFFIXES and not path.is_symlink():
            out.append(path)
    return out


def _is_dev_requirements(rel: Path) -> bool:
    """``requirements/dev*``: developer lists, not part of the worker runtime."""
    return len(rel.parts) == 2 and rel.parts[0] == "requirements" and rel.name.startswith("dev")


def bundle_files(bundles: Path) -> tuple[list[Path], list[str]]:
    """The files that ship from ``backend/bundles``: each bundle JSON and the ONNX file it names.

    Args:
        bundles: The ``backend/bundles`` folder.

    Returns:
        The files to add, and notes about bundles left out (no ONNX export).

    Raises:
        SystemExit: A bundle JSON is unreadable, or names an ONNX file that is not on disk.
    """
    files: list[Path] = []
    notes: list[str] = []
    if not bundles.is_dir():
        return files, notes
    for json_path in sorted([*bundles.glob("*.json"), *bundles.glob("*/*.json")]):
        if any(part.startswith(".") for part in json_path.relative_to(bundles).parts):
            continue
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: cannot read model bundle {json_path}: {exc}") from None
        onnx_name = shipped_onnx(data)
        if not onnx_name:
            notes.append(f"model bundle {json_path.relative_to(bundles)} has no ONNX export; left out of the zip")
            continue
        onnx_path = json_path.parent / onnx_name
        if not onnx_path.is_file():
            raise SystemExit(f"error: {onnx_path} named by {json_path} is missing; export it or fix the JSON's "
                             "\"onnx\"/\"onnx_int8\" entry")
        if onnx_path.resolve().parent != json_path.parent.resolve():
            raise SystemExit(f"error: {json_path} names an ONNX file outside its folder: {onnx_name}")
        files += [json_path, onnx_path]
    return sorted(set(files)), notes


def shipped_onnx(data: object) -> str | None:
    """The ONNX file a bundle ships with in the zip: its INT8 export when it has one, else the float one.

    Both would not fit the repository's 25 MB (a U-Net-ResNet18 is 14.5 MB as INT8 and 28.8 MB as float16
    weights); ``--precision auto`` runs the installed one (see backend/precision.py).
    """
    if not isinstance(data, dict):
        return None
    for key in ("onnx_int8", "onnx"):
        entry = data.get(key)
        if isinstance(entry, dict) and entry.get("file"):
            return str(entry["file"])
    return None


def build(out_zip: Path, repo: Path = REPO) -> list[str]:
    """Write the zip; returns the archive names written."""
    plugin = repo / "landcover_plugin"
    backend = repo / "backend"
    metadata = repo / "metadata.txt"
    for required in (plugin / "__init__.py", backend / "__init__.py", metadata):
        if not required.is_file():
            raise SystemExit(f"error: {required} is missing; run this from a complete Landcover checkout")
    bundles, notes = bundle_files(backend / "bundles")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(out_zip.name + ".part")
    names: list[str] = []
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(src: Path, arcname: str) -> None:
            zf.write(src, arcname)
            names.append(arcname)

        for path in _files(plugin):
            if path.name == "metadata.txt":
                continue  # the top-level metadata.txt is the source of truth (the plugin's is a symlink)
            add(path, f"{TOP}/{path.relative_to(plugin).as_posix()}")
        add(metadata, f"{TOP}/metadata.txt")
        for path in _files(backend):
            rel = path.relative_to(backend)
            if rel.parts[0] == "bundles" or _is_dev_requirements(rel):
                continue
            add(path, f"{TOP}/backend/{rel.as_posix()}")
        for path in bundles:
            add(path, f"{TOP}/backend/{path.relative_to(backend).as_posix()}")
        for extra in EXTRAS:
            if (repo / extra).is_file():
                add(repo / extra, f"{TOP}/{extra}")
    tmp.replace(out_zip)
    return names


def _checker() -> ModuleType:
    """``scripts/check_plugin_zip.py``, loaded by path (``scripts`` is not a package)."""
    if "check_plugin_zip" in sys.modules:
        return sys.modules["check_plugin_zip"]
    spec = importlib.util.spec_from_file_location("check_plugin_zip", Path(__file__).with_name("check_plugin_zip.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="zip to write, e.g. dist/landcover_plugin.zip")
    parser.add_argument("--no-check", action="store_true", help="skip the plugins.qgis.org rules check")
    args = parser.parse_args(argv)
    names = build(args.output)
    bundles = sorted({n.split("/")[3] for n in names if n.startswith(f"{TOP}/backend/bundles/") and n.count("/") > 3})
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({len(names)} files, {size:.1f} MB; model bundles: {', '.join(bundles) or 'none'})")
    if "default" not in bundles:
        print("note: no default model bundle in backend/bundles/default; users must choose a model", file=sys.stderr)
    if args.no_check:
        return 0
    checker = _checker()
    report = checker.check_zip(args.output)
    print(checker.format_report(report, args.output))
    if report.errors:
        print(f"error: {args.output} breaks the plugin repository's rules (kept for inspection)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
