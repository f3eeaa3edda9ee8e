"""Validate a LandCover.ai v1 download (``images/``, ``masks/``, optional ``train.txt``/``val.txt``/``test.txt``).

:func:`check_data` reads every file's header and every mask's pixels (a strip at a time, so memory stays
small) and returns a :class:`DataReport`: counts, pixel sizes, split sizes, and each problem (the data
cannot be used as is) or warning (it can, but differs from the official release) with its fix, one a line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import TrainingError
from training.fake_landcoverai import NAME_PATTERN, SPLITS, TILE, tile_grid

OFFICIAL_ORTHOPHOTOS = 41
EPSG = 2180
NUM_CLASSES = 5
KNOWN_GSDS = (0.25, 0.5)
ROWS_PER_READ = 1024
DOWNLOAD_FIX = "re-extract it from the official landcover.ai.v1.zip"


@dataclass(frozen=True)
class DataReport:
    """What :func:`check_data` found. ``ok`` when there is no problem (warnings allowed)."""

    dir: Path
    images: int = 0
    masks: int = 0
    pairs: int = 0
    pixel_sizes: dict[str, int] = field(default_factory=dict)  # "25 cm" / "50 cm" / other -> orthophotos
    split_sizes: dict[str, int] = field(default_factory=dict)  # list name -> tiles
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: usable or not, with the first problem."""
        if self.ok:
            return (f"{self.dir}: usable LandCover.ai v1 data ({self.pairs} orthophotos, "
                    f"{len(self.warnings)} warning(s))")
        more = f" (and {len(self.problems) - 1} more; run 'python -m training check-data {self.dir}')" \
            if len(self.problems) > 1 else ""
        return f"{self.dir} is not usable LandCover.ai v1 data: {self.problems[0]}{more}"

    def format(self) -> str:
        """The readable report: counts, pixel sizes, split sizes, then warnings and problems one a line."""
        sizes = ", ".join(f"{n} at {k}" for k, n in self.pixel_sizes.items()) or "none"
        splits = ", ".join(f"{k} {n}" for k, n in self.split_sizes.items()) or "none"
        lines = [
            f"LandCover.ai v1 check of {self.dir}",
            f"orthophotos: {self.pairs} pairs (images/ {self.images}, masks/ {self.masks}; "
            f"the official release has {OFFICIAL_ORTHOPHOTOS})",
            f"pixel sizes: {sizes}",
            f"split lists ({TILE} px tiles): {splits}",
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"problem: {p}" for p in self.problems]
        lines.append(f"result: {'usable' if self.ok else 'NOT usable'} ({len(self.problems)} problem(s), "
                     f"{len(self.warnings)} warning(s))")
        return "\n".join(lines)


def _gsd_label(gsd: float) -> str:
    return f"{gsd * 100:g} cm"


def _check_mask_values(src, rel: str) -> str | None:  # noqa: ANN001 - a rasterio dataset
    from rasterio.windows import Window

    bad: set[int] = set()
    for row in range(0, src.height, ROWS_PER_READ):
        strip = src.read(1, window=Window(0, row, src.width, min(ROWS_PER_READ, src.height - row)))
        if int(strip.max(initial=0)) >= NUM_CLASSES:
            bad |= {int(v) for v in np.unique(strip[strip >= NUM_CLASSES])}
    if bad:
        shown = ", ".join(str(v) for v in sorted(bad)[:5])
        return (f"{rel}: class values {shown} outside 0..{NUM_CLASSES - 1} (0 background, 1 building, 2 woodland, "
                f"3 water, 4 road); {DOWNLOAD_FIX} or remap the mask to 0..4")
    return None


def check_data(data_dir: Path | str) -> DataReport:
    """Check ``data_dir`` against the LandCover.ai v1 layout; never raises for bad data (see the report)."""
    import rasterio

    root = Path(data_dir)
    problems: list[str] = []
    warnings: list[str] = []
    folders = {}
    for sub in ("images", "masks"):
        folder = root / sub
        if not folder.is_dir():
            problems.append(f"{folder} does not exist; the folder must hold images/*.tif and masks/*.tif as in "
                            f"the official archive (unzip landcover.ai.v1.zip into {root})")
            folders[sub] = {}
        else:
            folders[sub] = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".tif", ".tiff")}
    images, masks = folders["images"], folders["masks"]
    if (root / "images").is_dir() and not images:
        problems.append(f"{root / 'images'} has no .tif orthophotos; {DOWNLOAD_FIX}")
    for name in sorted(images.keys() - masks.keys()):
        if masks or (root / "masks").is_dir():
            problems.append(f"masks/{name}.tif is missing (images/{name}.tif has no mask); {DOWNLOAD_FIX} "
                            f"or remove images/{name}.tif")
    for name in sorted(masks.keys() - images.keys()):
        problems.append(f"images/{name}.tif is missing (masks/{name}.tif has no image); {DOWNLOAD_FIX} "
                        f"or remove masks/{name}.tif")
    pair_names = sorted(images.keys() & masks.keys())
    shapes: dict[str, tuple[int, int]] = {}
    gsd_counts: dict[str, int] = {}
    for name in pair_names:
        irel, mrel = f"images/{name}.tif", f"masks/{name}.tif"
        try:
            with rasterio.open(images[name]) as img, rasterio.open(masks[name]) as msk:
                if not re.match(NAME_PATTERN, name):
                    warnings.append(f"{irel}: '{name}' is not a LandCover.ai map-sheet name like M-33-20-D-c-4-2; "
                                    f"fine for training, but the official split lists cannot name it")
                if img.count != 3 or any(d != "uint8" for d in img.dtypes):
                    problems.append(f"{irel}: {img.count} band(s) of {'/'.join(sorted(set(img.dtypes)))}, "
                                    f"expected 3-band (RGB) uint8; {DOWNLOAD_FIX} or convert it to RGB uint8")
                if msk.count != 1 or msk.dtypes[0] != "uint8":
                    problems.append(f"{mrel}: {msk.count} band(s) of {'/'.join(sorted(set(msk.dtypes)))}, "
                                    f"expected 1-band uint8 class ids; {DOWNLOAD_FIX}")
                if (img.height, img.width) != (msk.height, msk.width):
                    problems.append(f"{mrel}: {msk.width}x{msk.height} px but {irel} is {img.width}x{img.height}; "
                                    f"a mask must cover its image pixel for pixel; {DOWNLOAD_FIX}")
                else:
                    shapes[name] = (img.height, img.width)
                if img.crs != msk.crs or not img.transform.almost_equals(msk.transform, precision=1e-6):
                    problems.append(f"{mrel}: georeferencing differs from {irel} (CRS {msk.crs} vs {img.crs}, "
                                    f"origin {msk.transform.c:.2f},{msk.transform.f:.2f} vs "
                                    f"{img.transform.c:.2f},{img.transform.f:.2f}); {DOWNLOAD_FIX}")
                epsg = img.crs.to_epsg() if img.crs else None
                if epsg != EPSG:
                    problems.append(f"{irel}: CRS {img.crs or 'missing'}, expected EPSG:{EPSG} (PL-1992); "
                                    f"{DOWNLOAD_FIX} (do not reproject: masks must stay aligned)")
                gx, gy = abs(img.transform.a), abs(img.transform.e)
                known = [g for g in KNOWN_GSDS if math.isclose(gx, g, abs_tol=1e-3) and math.isclose(gy, g,
                                                                                                 abs_tol=1e-3)]
                label = _gsd_label(known[0]) if known else f"{gx:g} x {gy:g} m"
                gsd_counts[label] = gsd_counts.get(label, 0) + 1
                if not known:
                    warnings.append(f"{irel}: pixel size {gx:g} x {gy:g} m, LandCover.ai has only 0.25 and 0.5 m; "
                                    f"check the file, or set the bundle's --gsd to what you train on")
                if msk.count == 1 and msk.dtypes[0] == "uint8":
                    bad = _check_mask_values(msk, mrel)
                    if bad:
                        problems.append(bad)
        except rasterio.errors.RasterioIOError as exc:
            problems.append(f"{irel} or {mrel} cannot be read ({str(exc).splitlines()[0]}); {DOWNLOAD_FIX}")
    pixel_sizes = {k: gsd_counts[k] for k in sorted(gsd_counts, key=lambda s: (s not in ("25 cm", "50 cm"), s))}
    if pair_names and len(pair_names) != OFFICIAL_ORTHOPHOTOS:
        warnings.append(f"{len(pair_names)} orthophotos, the official release has {OFFICIAL_ORTHOPHOTOS}; "
                        f"fine for a subset or an imitation, otherwise {DOWNLOAD_FIX}")
    split_sizes = _check_splits(root, set(images) | set(masks), shapes, problems, warnings)
    return DataReport(dir=root, images=len(images), masks=len(masks), pairs=len(pair_names),
                      pixel_sizes=pixel_sizes, split_sizes=split_sizes, problems=tuple(problems),
                      warnings=tuple(warnings))


def _check_splits(root: Path, names: set[str], shapes: dict[str, tuple[int, int]], problems: list[str],
                  warnings: list[str]) -> dict[str, int]:
    """Check train.txt/val.txt/test.txt: known orthophotos, full in-range tiles, no tile in two lists."""
    present = [s for s in SPLITS if (root / f"{s}.txt").is_file()]
    if not present:
        warnings.append(f"no official split lists ({', '.join(s + '.txt' for s in SPLITS)}) in {root}; "
                        f"the pipeline's own split is used, copy them from the archive to compare with papers")
        return {}
    for s in SPLITS:
        if s not in present:
            warnings.append(f"{s}.txt is missing while {', '.join(p + '.txt' for p in present)} exist; "
                            f"{DOWNLOAD_FIX}")
    seen: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for s in present:
        lines = [line.strip() for line in (root / f"{s}.txt").read_text().splitlines()]
        tiles = [t for t in lines if t]
        sizes[s] = len(tiles)
        reported: set[str] = set()  # one problem per orthophoto and kind, not one per tile
        for n, tile in enumerate(tiles, 1):
            where = f"{s}.txt line {n}"
            ortho, _, k_text = tile.rpartition("_")
            if not ortho or not k_text.isdigit():
                problems.append(f"{where}: '{tile}' is not a tile name NAME_k (e.g. M-33-20-D-c-4-2_0); "
                                f"{DOWNLOAD_FIX}")
                continue
            k = int(k_text)
            if ortho not in names:
                if ("missing", s, ortho) not in reported:
                    reported.add(("missing", s, ortho))
                    problems.append(f"{where}: '{tile}' names orthophoto {ortho}, which is not in images/; "
                                    f"add images/{ortho}.tif and masks/{ortho}.tif ({DOWNLOAD_FIX})")
            elif ortho in shapes:
                h, w = shapes[ortho]
                rows, cols = tile_grid(h, w)
                r, c = divmod(k, cols)
                if k >= rows * cols or (r + 1) * TILE > h or (c + 1) * TILE > w:
                    problems.append(f"{where}: '{tile}' is outside the full {TILE} px tiles of {ortho} "
                                    f"({w}x{h} px: k < {rows * cols}, edge tiles excluded); the list does not "
                                    f"match this orthophoto, {DOWNLOAD_FIX}")
            if tile in seen:
                if seen[tile] == s:
                    warnings.append(f"{where}: '{tile}' is listed twice in {s}.txt; remove the duplicate")
                else:
                    problems.append(f"{where}: '{tile}' is also in {seen[tile]}.txt; a tile must be in one list "
                                    f"only, {DOWNLOAD_FIX}")
            else:
                seen[tile] = s
    return sizes


def require_usable(data_dir: Path | str) -> DataReport:
    """:func:`check_data`, raising :class:`TrainingError` with the summary when the data is not usable."""
    report = check_data(data_dir)
    if not report.ok:
        raise TrainingError(report.summary())
    return report
