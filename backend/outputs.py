"""Writing results: the class GeoTIFF, its QGIS style, the class-area summary, the confidence raster.

Every file is first written under a hidden temporary name in the destination folder and renamed
into place only when the whole run succeeded (:class:`OutputSet`), so an interrupted run never
leaves a file that looks finished. The class raster is renamed last.
"""

from __future__ import annotations

import errno
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import (
    NODATA,
    TAG_CLASSES,
    TAG_MODEL,
    ClassInfo,
    OutputFiles,
    areas_csv,
    areas_table,
    classes_to_json,
    output_files,
    temp_path,
)
from backend.errors import OutputError

CONFIDENCE_NODATA = -1.0

__all__ = ["NODATA", "CONFIDENCE_NODATA", "OutputFiles", "output_files", "temp_path"]


class OutputSet:
    """Temporary files that become the final outputs together, or are all removed."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def reserve(self, final: Path) -> Path:
        tmp = temp_path(final)
        self._pending.append((tmp, final))
        return tmp

    def write_text(self, final: Path, text: str) -> None:
        tmp = self.reserve(final)
        with disk_errors(final):
            tmp.write_text(text)

    def commit(self) -> None:
        """Rename every temporary file into place, the first-reserved (main) output last."""
        for tmp, final in reversed(self._pending):
            with disk_errors(final):
                os.replace(tmp, final)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self._pending.clear()


class disk_errors:  # noqa: N801 - used as a context manager, reads like a statement
    """Turn full-disk and permission errors into :class:`OutputError` naming the file and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        text = str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in text:
            raise OutputError(
                f"no space left on the disk while writing {self.path}; free space or write elsewhere"
            ) from exc
        if isinstance(exc, PermissionError) or "Permission denied" in text:
            raise OutputError(f"no permission to write {self.path}; choose a folder you can write to") from exc
        if exc_type.__module__.startswith("rasterio") and ("write" in text.lower() or "disk" in text.lower()):
            reason = text.splitlines()[0][:200]
            raise OutputError(f"writing {self.path} failed ({reason}); check free space") from exc
        return False


def check_output_path(output: Path, input_path: Path | None = None) -> Path:
    """Validate the output path before any work: .tif name, not the input, folder writable."""
    output = Path(output).expanduser()
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise OutputError(f"output {output} must be a GeoTIFF name ending in .tif")
    if input_path is not None and output.exists() and Path(input_path).exists():
        if output.resolve() == Path(input_path).resolve():
            raise OutputError("the output would overwrite the input raster; choose another output name")
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

    @property
    def valid_pixels(self) -> int:
        return int(sum(self.counts))

    def to_dict(self) -> dict[str, Any]:
        """The ``areas`` object (see :func:`backend.contract.areas_table`)."""
        return areas_table(self.classes, self.counts, self.pixel_area_m2, self.nodata_pixels)

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
