"""Writing results: the class GeoTIFF, its QGIS style, the class-area summary, the confidence raster.

Every file is first written under a hidden temporary name in the destination folder and renamed
into place only when the whole run succeeded (:class:`OutputSet`), all files or none, so an
interrupted or failed run never leaves a file that looks finished and never replaces part of an
earlier result. The class raster is renamed last. Temporary files of killed runs are removed by
the next run into the same folder (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import (
    BATCH_AREAS_CSV,
    BATCH_AREAS_JSON,
    NODATA,
    TAG_CLASSES,
    TAG_MODEL,
    TEMP_MARK,
    ClassInfo,
    OutputFiles,
    areas_csv,
    areas_table,
    classes_to_json,
    output_files,
    temp_path,
)
from backend.errors import OutputError
from backend.write_guard import write_failure

CONFIDENCE_NODATA = -1.0

__all__ = ["NODATA", "CONFIDENCE_NODATA", "OutputFiles", "output_files", "temp_path"]


class OutputSet:
    """Temporary files that become the final outputs together, or not at all.

    :meth:`commit` first checks that every final name can be replaced and flushes every temporary
    file to disk, then renames them into place (the first-reserved, main output last) while keeping
    each previous file under a hidden backup name; if any rename fails, the renames already done are
    undone, so the previous result is left exactly as it was. Backups are removed once all succeeded.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def reserve(self, final: Path) -> Path:
        tmp = temp_path(final)
        self._pending.append((tmp, final))
        return tmp

    @property
    def finals(self) -> list[Path]:
        return [final for _, final in self._pending]

    def write_text(self, final: Path, text: str) -> None:
        tmp = self.reserve(final)
        with disk_errors(final), open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def check(self) -> None:
        """Raise :class:`OutputError` unless every final name can be replaced (before any rename)."""
        for final in self.finals:
            problem = replace_problem(final)
            if problem:
                raise OutputError(f"{problem}; nothing was replaced")

    def commit(self) -> None:
        """Rename every temporary file into place, all or none; the first-reserved (main) output last."""
        order = list(reversed(self._pending))
        self.check()
        for tmp, final in order:
            with disk_errors(final):
                _fsync(tmp)
        done: list[tuple[Path, Path, Path | None, bool]] = []  # (tmp, final, backup, replaced)
        current = order[0][1] if order else Path()
        try:
            for tmp, final in order:
                current = final
                backup = _keep_previous(final)
                done.append((tmp, final, backup, False))
                os.replace(tmp, final)
                done[-1] = (tmp, final, backup, True)
        except BaseException as exc:
            failed = current
            left = _roll_back(done)
            if not isinstance(exc, OSError):
                raise
            reason = exc.strerror or str(exc)
            if left:
                raise OutputError(
                    f"could not replace {failed} ({reason}), and restoring the previous files failed: "
                    + "; ".join(left)
                ) from exc
            raise OutputError(
                f"could not replace {failed} ({reason}); the previous result is unchanged; "
                "close it in other programs or choose another output name"
            ) from exc
        self._pending.clear()
        for _, _, backup, _ in done:
            if backup is not None:
                _unlink(backup)
        _fsync_dir({final.parent for _, final in order})

    def discard(self) -> None:
        for tmp, _ in self._pending:
            _unlink(tmp)
        self._pending.clear()


BACKUP_SUFFIX = ".old"


def backup_path(final: Path) -> Path:
    """Hidden name the previous ``final`` is kept under until a new set is committed."""
    return temp_path(final).with_name(temp_path(final).name + BACKUP_SUFFIX)


def _keep_previous(final: Path) -> Path | None:
    """Keep the existing ``final`` (if any) under its backup name; the final name stays until replaced."""
    if not os.path.lexists(final):
        return None
    backup = backup_path(final)
    _unlink(backup)
    try:
        os.link(final, backup, follow_symlinks=False)  # the final name never disappears
    except (OSError, NotImplementedError):
        os.replace(final, backup)  # no hard links here (FAT, some network shares): set it aside
    return backup


def _roll_back(done: list[tuple[Path, Path, Path | None, bool]]) -> list[str]:
    """Undo renames in reverse order; the problems that remain, as sentences."""
    left = []
    for _tmp, final, backup, replaced in reversed(done):
        try:
            if backup is not None and _same_file(backup, final):
                os.unlink(backup)  # not replaced yet: the final name still is the previous file
            elif backup is not None:
                os.replace(backup, final)
            elif replaced:
                os.unlink(final)
        except OSError as exc:
            left.append(f"the previous {final.name} is kept as {backup} ({exc.strerror})" if backup
                        else f"remove the new {final} ({exc.strerror})")
    return left


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except OSError:
        return False


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _fsync(path: Path) -> None:
    """Flush ``path`` to the disk: a delayed write error (full disk, quota, NFS) shows up here, not later."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folders) -> None:
    if os.name != "posix":
        return
    for folder in folders:
        try:
            fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def replace_problem(final: Path) -> str | None:
    """Why ``final`` cannot be replaced by a rename, or None: it must be a file or absent, its folder
    writable, and in a sticky folder (like /tmp) an existing file must be ours (or we are root)."""
    final = Path(final)
    folder = final.parent if str(final.parent) else Path(".")
    try:
        st = os.stat(final)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return f"cannot check the output {final} ({exc.strerror}); choose another name"
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        return f"the output {final} exists and is {kind}; choose another output name"
    effective = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK, **effective):
        return f"cannot write into {folder}; choose a folder you can write to"
    if st is not None and hasattr(os, "geteuid"):
        uid = os.geteuid()
        folder_st = os.stat(folder)
        if folder_st.st_mode & stat.S_ISVTX and uid != 0 and st.st_uid != uid and folder_st.st_uid != uid:
            return (f"the existing {final} belongs to another user (uid {st.st_uid}) in the shared folder {folder}, "
                    "where only its owner may replace it; choose another output name or folder")
    return None


def check_replaceable(finals) -> None:
    """Raise :class:`OutputError` unless all of ``finals`` can be replaced."""
    for final in finals:
        problem = replace_problem(Path(final))
        if problem:
            raise OutputError(problem)


#: Names :func:`remove_stale_temps` recognises: ``.NAME.part-PID`` and ``.NAME.part-PID.old``.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)" + re.escape(TEMP_MARK) + r"(?P<pid>\d+)(?P<old>" + re.escape(BACKUP_SUFFIX)
                        + r")?$")
_OUTPUT_SUFFIXES = (".tif", ".tiff", ".qml", ".areas.json", ".areas.csv", ".aux.xml", ".vrt")
#: And the batch's tables (``segment`` cleans the batch folder before each item).
_OUTPUT_NAMES = (BATCH_AREAS_CSV, BATCH_AREAS_JSON)


def _is_output_name(name: str) -> bool:
    name = name.lower()
    return name.endswith(_OUTPUT_SUFFIXES) or name in _OUTPUT_NAMES


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (True when that cannot be told: then its files are kept)."""
    if pid <= 0 or pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate it on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. EPERM: another user's live process
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process whose parent died too stays a zombie where nothing reaps orphans (containers without
    an init): it exists for ``kill(pid, 0)`` but will never write again."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def remove_stale_temps(folder: Path, owns: Callable[[str], bool] | None = None) -> list[Path]:
    """Clean up after runs that were killed: their ``.NAME.part-PID`` files in ``folder`` (only for
    the final names ``NAME`` that ``owns`` accepts, by default the segment and batch output names; only
    for processes that no longer exist). A kept previous file (``.part-PID.old``) whose final name is
    missing is put back, else removed. Returns what was touched.

    An analyst's output folder holds other programs' files, hence only output names by default; a
    training run, which owns its work folder whole, passes ``owns`` accepting every name."""
    folder = Path(folder) if str(folder) else Path(".")
    touched = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return touched
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if not m:
            continue
        owned = owns(m.group("name")) if owns is not None else _is_output_name(m.group("name"))
        if not owned or pid_alive(int(m.group("pid"))):
            continue
        path = Path(entry.path)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            final = folder / m.group("name")
            if m.group("old") and not os.path.lexists(final):
                os.replace(path, final)
            else:
                os.unlink(path)
            touched.append(path)
        except OSError:
            continue
    return touched


class disk_errors:  # noqa: N801 - used as a context manager, reads like a statement
    """Turn full-disk and permission errors into :class:`OutputError` naming the file and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, OutputError):
            return False
        text = str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in text:
            raise OutputError(
                f"no space left on the disk while writing {self.path}; free space or write elsewhere"
            ) from exc
        if isinstance(exc, PermissionError) or "Permission denied" in text:
            raise OutputError(f"no permission to write {self.path}; choose a folder you can write to") from exc
        if isinstance(exc, OSError) and exc.errno is not None:
            raise write_failure(self.path, exc.strerror or text) from exc
        if exc_type.__module__.startswith("rasterio") and ("write" in text.lower() or "disk" in text.lower()):
            reason = text.splitlines()[0][:200]
            raise OutputError(f"writing {self.path} failed ({reason}); check free space") from exc
        return False


def check_output_path(output: Path, input_path: Path | None = None) -> Path:
    """Validate the output path before any work: .tif name, not the input, a file (or absent), folder writable."""
    output = Path(output).expanduser()
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise OutputError(f"output {output} must be a GeoTIFF name ending in .tif")
    if input_path is not None and output.exists() and Path(input_path).exists():
        if output.resolve() == Path(input_path).resolve():
            raise OutputError("the output would overwrite the input raster; choose another output name")
    if output.exists() and not output.is_file():
        kind = "a folder" if output.is_dir() else "not a regular file"
        raise OutputError(f"the output {output} exists and is {kind}; choose another output name")
    parent = output.parent if str(output.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {parent} ({exc.strerror}); choose another") from exc
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write into {parent}; choose a folder you can write to")
    return output


def raster_profile(width: int, height: int, crs, transform, dtype: str, nodata: float) -> dict[str, Any]:
    """Tiled, DEFLATE-compressed single-band GeoTIFF profile."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": dtype,
        "nodata": nodata,
        "compress": "deflate",
        # Level 3 compresses class rasters as small as the default 6 in half the time, and the
        # blocks are compressed on all cores (writing happens between predictions, when they idle).
        "ZLEVEL": "3",
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None and not transform.is_identity:
        profile["transform"] = transform
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if dtype.startswith("float"):
        profile["predictor"] = 3
    return profile


def write_class_metadata(dst, classes: tuple[ClassInfo, ...], model_name: str) -> None:
    """Colour table, band description and class names inside the class GeoTIFF."""
    colormap = {i: (0, 0, 0, 0) for i in range(256)}
    for c in classes:
        colormap[c.id] = (*c.color, 255)
    dst.write_colormap(1, colormap)
    dst.set_band_description(1, "land cover class")
    dst.update_tags(1, **{f"CLASS_{c.id}": c.name for c in classes})
    dst.update_tags(**{TAG_MODEL: model_name, TAG_CLASSES: classes_to_json(classes)})


def pam_xml(classes: tuple[ClassInfo, ...]) -> str:
    """GDAL PAM sidecar with the category names (GeoTIFF cannot hold them itself)."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    for c in classes:
        ET.SubElement(names, "Category").text = c.name
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def qml_style(classes: tuple[ClassInfo, ...]) -> str:
    """QGIS style: paletted renderer with class names as labels, nodata (255) transparent."""
    root = ET.Element("qgis", version="3.22.0", styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(c.id),
            color="#{:02x}{:02x}{:02x}".format(*c.color),
            alpha="255",
            label=c.name,
        )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


@dataclass(frozen=True)
class AreaSummary:
    """Pixels, square metres and share of every class in the valid part of the output."""

    classes: tuple[ClassInfo, ...]
    counts: tuple[int, ...]
    pixel_area_m2: float | None
    nodata_pixels: int
    areas_m2: tuple[float, ...] | None = None  # summed row by row where the ground pixel area varies

    @property
    def valid_pixels(self) -> int:
        return int(sum(self.counts))

    def to_dict(self) -> dict[str, Any]:
        """The ``areas`` object (see :func:`backend.contract.areas_table`)."""
        return areas_table(self.classes, self.counts, self.pixel_area_m2, self.nodata_pixels, self.areas_m2)

    def rows(self) -> list[dict[str, Any]]:
        return self.to_dict()["classes"]

    def to_csv(self) -> str:
        return areas_csv(self.to_dict())

    def table(self) -> str:
        """Human-readable table for the terminal."""
        lines = [f"{'class':<12}{'pixels':>15}{'area m2':>20}{'%':>9}"]
        for r in self.rows():
            area = "n/a" if r["area_m2"] is None else f"{r['area_m2']:,.1f}"
            lines.append(f"{r['name']:<12}{r['pixels']:>15,}{area:>20}{r['percent']:>9.2f}")
        return "\n".join(lines)


def class_counts(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class id in a class array (nodata ignored)."""
    return np.bincount(classes[classes != NODATA].ravel(), minlength=num_classes)[:num_classes]
