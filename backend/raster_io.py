"""Reading input rasters as analysts have them, one strip at a time.

:class:`RasterSource` validates an input once (bands, data type, CRS, pixel size) and then serves
reflect-indexed pixel blocks plus a validity mask, so the engine never holds the whole image.

Rules (also in the README):
- Bands: the model's band count is taken from the non-alpha bands, first ones first (bands 1-3 of
  an RGBN raster) unless ``bands`` chooses them. An alpha band, a nodata value or an internal mask
  marks pixels invalid; a pixel is invalid when every chosen band is masked (GDAL's rule).
- Data type: uint8 is used as is. Other types whose valid values all lie in 0..255 are used as is;
  floats within 0..1 are multiplied by 255; anything else is stretched per band linearly from its
  2nd to its 98th percentile (taken on a decimated read) to 0..255. NaN is invalid.
- Pixel size: converted to metres (projected CRS by its unit, geographic CRS at the centre
  latitude) and compared with the model's; more than ``GSD_TOLERANCE`` (2x, in :mod:`backend.contract`)
  off gives a warning, ``resample`` warps on the fly (bilinear) to the model's resolution.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backend.contract import degrees_to_metres, ground_distance_m, ground_pixel_size, gsd_is_far, gsd_ratio
from backend.errors import InputError

if TYPE_CHECKING:
    from affine import Affine

MAX_PIXELS = 2_000_000_000  # refuse (resampled) rasters larger than this: hours of CPU, likely a mistake
_STATS_SIZE = 1024  # long side of the decimated read used for the percentile stretch


@dataclass(frozen=True)
class Window:
    """A pixel window of the input raster: ``col_off, row_off, width, height``."""

    col_off: int
    row_off: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or self.col_off < 0 or self.row_off < 0:
            raise InputError(
                f"window {self.as_text()} must have col_off,row_off >= 0 and width,height >= 1"
            )

    def as_text(self) -> str:
        return f"{self.col_off},{self.row_off},{self.width},{self.height}"

    def as_rasterio(self):
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col_off, self.row_off, self.width, self.height)


def pixel_size_m(crs, transform, width: int, height: int) -> tuple[float, float] | None:
    """Pixel width and height in metres, or None without a CRS (or with a unit we cannot convert)."""
    if crs is None:
        return None
    if crs.is_geographic:
        px, py = _pixel_units(transform)
        return degrees_to_metres(px, py, (transform @ (width / 2, height / 2))[1])
    nominal = _nominal_m(crs, transform)
    if nominal is None:
        return None
    ground = _ground_pixels_m(crs, transform, [(width / 2, height / 2)])
    return nominal if ground is None else ground_pixel_size(nominal, ground[0])


def row_pixel_areas_m2(crs, transform, width: int, height: int) -> np.ndarray | None:
    """Ground area of one pixel in every row (at the middle column), or None when only a single pixel area
    applies (true-to-scale projections: the CRS's own metres) or none can be known (no CRS).

    Geographic CRSs and projections with scale distortion change their ground pixel size from row to row
    (Web Mercator by 0.1 % per 2.4 km north-south at 54° N): areas of tall rasters add up row by row.
    """
    if crs is None:
        return None
    middles = [(width / 2, r + 0.5) for r in range(height)]
    if crs.is_geographic:
        px, py = _pixel_units(transform)
        return np.array([np.prod(degrees_to_metres(px, py, (transform * m)[1])) for m in middles])
    nominal = _nominal_m(crs, transform)
    if nominal is None or pixel_size_m(crs, transform, width, height) == nominal:
        return None  # true to scale: one pixel area for all rows
    sizes = _ground_pixels_m(crs, transform, middles)
    return None if sizes is None else np.array([w * h for w, h in sizes])


def _pixel_units(transform) -> tuple[float, float]:
    """A pixel's width and height in the CRS's units."""
    return math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)


def _nominal_m(crs, transform) -> tuple[float, float] | None:
    """A projected CRS's pixel size in its own metres (None for units rasterio cannot convert)."""
    try:
        factor = crs.linear_units_factor[1]
    except Exception:  # noqa: BLE001 - rasterio raises CRSError or ValueError for odd units
        return None
    px, py = _pixel_units(transform)
    return px * factor, py * factor


def _ground_pixels_m(crs, transform, pixels: list[tuple[float, float]]) -> list[tuple[float, float]] | None:
    """Width and height on the ground of the pixels centred at ``(col, row)``: their edge midpoints taken to
    longitude and latitude (one PROJ call for all), measured on the ellipsoid. None when the CRS cannot be
    transformed."""
    from rasterio.warp import transform as warp

    points = [transform @ p for col, row in pixels
              for p in ((col - 0.5, row), (col + 0.5, row), (col, row - 0.5), (col, row + 0.5))]
    try:
        lons, lats = warp(crs, "EPSG:4326", [p[0] for p in points], [p[1] for p in points])
    except Exception:  # noqa: BLE001 - PROJ errors for CRSs without a geographic link
        return None
    if not all(map(math.isfinite, [*lons, *lats])):
        return None
    return [(ground_distance_m(lons[i], lats[i], lons[i + 1], lats[i + 1]),
             ground_distance_m(lons[i + 2], lats[i + 2], lons[i + 3], lats[i + 3])) for i in range(0, len(lons), 4)]


@dataclass
class SourceInfo:
    """What was learned about an input while opening it (reported to the user)."""

    path: Path
    band_count: int
    bands: tuple[int, ...]
    dtype: str
    crs_text: str | None
    pixel_size_m: tuple[float, float] | None
    resampled: bool = False
    scaling: str = "none"
    warnings: list[str] = field(default_factory=list)


class RasterSource:
    """An opened input raster, windowed and/or resampled, serving model-ready pixel blocks.

    Args:
        path: any raster GDAL reads.
        model_bands: how many bands the model takes.
        bands: 1-based band numbers to use, or None for the default rule.
        window: restrict to this pixel window of the input.
        model_gsd_m: the model's metres per pixel (for the warning and resampling).
        resample: warp to ``model_gsd_m`` on the fly.
    """

    def __init__(
        self,
        path: Path | str,
        model_bands: int,
        bands: tuple[int, ...] | None = None,
        window: Window | None = None,
        model_gsd_m: float | None = None,
        resample: bool = False,
    ) -> None:
        import rasterio
        from rasterio.errors import RasterioIOError

        self.path = Path(path)
        if not self.path.exists() and "://" not in str(path) and not str(path).startswith("/vsi"):
            raise InputError(f"input raster {self.path} does not exist; check the path")
        try:
            self._src = rasterio.open(str(path))
        except RasterioIOError as exc:
            raise InputError(
                f"cannot read {self.path} as a raster ({_gdal_reason(exc)}); is it a GeoTIFF or another GDAL format, "
                "and not truncated?"
            ) from exc
        try:
            self._setup(model_bands, bands, window, model_gsd_m, resample)
        except BaseException:
            self.close()
            raise

    def _setup(
        self,
        model_bands: int,
        bands: tuple[int, ...] | None,
        window: Window | None,
        model_gsd_m: float | None,
        resample: bool,
    ) -> None:
        """Validate the opened raster and set what :meth:`read` needs.

        Raises:
            InputError: on the first check the input fails (bands, window, resampling, size, valid pixels).
        """
        self.bands, info_warnings = self._choose_bands(model_bands, bands)
        win = self._clip_window(window)
        transform = self._src.window_transform(win.as_rasterio())
        size_m = pixel_size_m(self._src.crs, transform, win.width, win.height)
        info_warnings += self._crs_warnings(size_m)
        # Plain reads from the window first: _match_model_gsd may replace them with a warped view.
        self._read_from(win, transform)
        resampled, gsd_warnings = self._match_model_gsd(size_m, model_gsd_m, resample, transform, win)
        info_warnings += gsd_warnings
        self._check_pixel_count()
        self._masked = self._bands_have_mask()
        self._scale = self._scaling_rule()
        dtype = self._src.dtypes[self.bands[0] - 1]
        if self._scale.kind != "none":
            info_warnings.append(f"{dtype} data: {self._scale.describe()}")
        self.info = self._source_info(dtype, resampled, info_warnings)

    def _choose_bands(self, model_bands: int, bands: tuple[int, ...] | None) -> tuple[tuple[int, ...], list[str]]:
        """The bands to feed the model: ``bands`` checked, or the first non-alpha ones.

        Returns:
            ``(bands, warnings)``; the warning says which bands were taken when there were more.

        Raises:
            InputError: too few data bands, or ``bands`` of the wrong length or naming missing bands.
        """
        from rasterio.enums import ColorInterp

        src = self._src
        alpha = [i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
        data_bands = [b for b in range(1, src.count + 1) if b not in alpha]
        if bands is not None:
            if len(bands) != model_bands:
                raise InputError(f"--bands lists {len(bands)} band(s) but the model needs {model_bands}")
            bad = [b for b in bands if b > src.count]
            if bad:
                raise InputError(f"--bands {bad} do not exist: {self.path.name} has {src.count} band(s)")
            return tuple(bands), []
        if len(data_bands) < model_bands:
            raise InputError(
                f"{self.path.name} has {len(data_bands)} data band(s) but the model needs {model_bands} "
                f"(RGB); use a {model_bands}-band orthophoto"
                # --bands can only help when the raster has enough bands once alpha bands are counted.
                + (" or choose bands with --bands" if src.count >= model_bands else "")
            )
        chosen = tuple(data_bands[:model_bands])
        if len(data_bands) > model_bands:
            return chosen, [
                f"{self.path.name} has {len(data_bands)} bands; using bands {','.join(map(str, chosen))} "
                "as RGB (choose others with --bands)"
            ]
        return chosen, []

    def _clip_window(self, window: Window | None) -> Window:
        """The pixel window to segment: ``window`` cut to the raster's extent, or the whole raster.

        Raises:
            InputError: ``window`` lies entirely outside the raster.
        """
        from rasterio.windows import Window as RioWindow

        src = self._src
        if window is None:
            return Window(0, 0, src.width, src.height)
        if window.col_off + window.width <= src.width and window.row_off + window.height <= src.height:
            return window
        full = RioWindow(0, 0, src.width, src.height)
        try:
            w = window.as_rasterio().intersection(full)
        except Exception:  # noqa: BLE001 - rasterio raises WindowError for disjoint windows
            raise InputError(
                f"window {window.as_text()} lies outside the raster ({src.width} x {src.height} px)"
            ) from None
        return Window(int(w.col_off), int(w.row_off), int(w.width), int(w.height))

    def _crs_warnings(self, size_m: tuple[float, float] | None) -> list[str]:
        """Warnings for a raster without a CRS, or with one whose pixel size has no metre equivalent."""
        if self._src.crs is None:
            return [
                f"{self.path.name} has no CRS: segmenting anyway, the output has no CRS either and areas are in pixels"
            ]
        if size_m is None:
            return [f"cannot convert the pixel size of {self.path.name} to metres; areas are in pixels"]
        return []

    def _read_from(self, win: Window, transform: Affine) -> None:
        """Serve pixels from ``win`` of the file itself (:meth:`_warp_to` may switch to a resampled view)."""
        self._ds = self._src
        self._row_off, self._col_off = win.row_off, win.col_off
        self.height, self.width = win.height, win.width
        self.transform = transform
        self.crs = self._src.crs

    def _match_model_gsd(
        self,
        size_m: tuple[float, float] | None,
        model_gsd_m: float | None,
        resample: bool,
        transform: Affine,
        win: Window,
    ) -> tuple[bool, list[str]]:
        """Resample to the model's pixel size when asked, else warn when it is far off.

        Returns:
            ``(resampled, warnings)``.

        Raises:
            InputError: resampling asked for a raster without a CRS, or making too large a raster.
        """
        if size_m is not None and model_gsd_m:
            ratio = gsd_ratio(size_m, model_gsd_m)
            # No warp within 0.1 % of the model's pixel size: it would give about the same pixel grid.
            if resample and not (0.999 < ratio < 1.001):
                self._warp_to(model_gsd_m, size_m, transform, win)
                return True, [
                    f"resampled from {_fmt_m(size_m)} to the model's {model_gsd_m:g} m pixels "
                    f"({self.width} x {self.height} px)"
                ]
            if gsd_is_far(size_m, model_gsd_m):
                return False, [
                    f"pixel size {_fmt_m(size_m)} is {_fmt_ratio(ratio)} the model's {model_gsd_m:g} m: "
                    "objects will not look like they did in training and results will be poor; "
                    "resample to the model's resolution (--resample, or Resample in the QGIS dialog)"
                ]
        elif resample and self._src.crs is None:
            raise InputError(f"--resample needs a CRS, and {self.path.name} has none; assign one in QGIS or GDAL")
        return False, []

    def _check_pixel_count(self) -> None:
        """Refuse an area to segment larger than :data:`MAX_PIXELS`."""
        if self.height * self.width > MAX_PIXELS:
            raise InputError(
                f"the raster to segment would be {self.width} x {self.height} px, more than {MAX_PIXELS:,} pixels; "
                "choose a smaller area (--window) or a model made for this resolution"
            )

    def _bands_have_mask(self) -> bool:
        """Whether any chosen band has nodata, alpha or an internal mask (else :meth:`read` skips mask reads)."""
        return any(flags != [_all_valid()] for flags in (self._ds.mask_flag_enums[b - 1] for b in self.bands))

    def _source_info(self, dtype: str, resampled: bool, info_warnings: list[str]) -> SourceInfo:
        """What the user is told about this input, describing the area actually served."""
        src = self._src
        return SourceInfo(
            path=self.path,
            band_count=src.count,
            bands=self.bands,
            dtype=dtype,
            crs_text=src.crs.to_string() if src.crs else None,
            pixel_size_m=pixel_size_m(self.crs, self.transform, self.width, self.height),
            resampled=resampled,
            scaling=self._scale.describe(),
            warnings=info_warnings,
        )

    def row_pixel_areas_m2(self) -> np.ndarray | None:
        """Ground area of a pixel in each row of the area served (None: one area for all, see ``info``)."""
        return row_pixel_areas_m2(self.crs, self.transform, self.width, self.height)

    def _warp_to(self, model_gsd_m: float, size_m: tuple[float, float], transform, win: Window) -> None:
        from affine import Affine
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        width = max(1, round(win.width * size_m[0] / model_gsd_m))
        height = max(1, round(win.height * size_m[1] / model_gsd_m))
        if width * height > MAX_PIXELS:
            raise InputError(
                f"resampling to {model_gsd_m:g} m would make a {width} x {height} px raster; "
                "choose a smaller area (--window) or a model made for this resolution"
            )
        new_transform = transform @ Affine.scale(win.width / width, win.height / height)
        vrt_kwargs = {}
        if self._src.nodata is not None:
            vrt_kwargs["src_nodata"] = self._src.nodata
            vrt_kwargs["nodata"] = self._src.nodata
        self._ds = WarpedVRT(
            self._src,
            crs=self._src.crs,
            transform=new_transform,
            width=width,
            height=height,
            resampling=Resampling.bilinear,
            **vrt_kwargs,
        )
        self._row_off = self._col_off = 0
        self.height, self.width = height, width
        self.transform = new_transform

    def _scaling_rule(self) -> _Scaling:
        dtype = np.dtype(self._ds.dtypes[self.bands[0] - 1])
        if dtype == np.uint8:
            return _Scaling("none")
        from rasterio.enums import Resampling

        factor = max(1.0, max(self.height, self.width) / _STATS_SIZE)
        shape = (len(self.bands), max(1, int(self.height / factor)), max(1, int(self.width / factor)))
        sample = self._ds.read(
            list(self.bands),
            window=self._rio_window(self._row_off, self._col_off, self.height, self.width),
            out_shape=shape,
            resampling=Resampling.nearest,
            masked=True,
        ).astype(np.float64)
        values = np.ma.masked_invalid(sample)
        if values.count() == 0:
            raise InputError(f"{self.path.name} has no valid pixels (all nodata) in the area to segment")
        vmin, vmax = float(values.min()), float(values.max())
        if vmin >= 0 and vmax <= 255 and (dtype.kind in "iu" or vmax > 1):
            return _Scaling("none", note=f"values {vmin:g}..{vmax:g} used as 8-bit")
        if dtype.kind == "f" and vmin >= 0 and vmax <= 1:
            return _Scaling("linear", np.zeros(len(self.bands)), np.full(len(self.bands), 1.0), "0..1 values x 255")
        lows, highs = [], []
        for b in range(len(self.bands)):
            band = values[b].compressed()
            lo, hi = np.percentile(band, [2, 98]) if band.size else (0.0, 1.0)
            if hi <= lo:
                hi = lo + 1.0
            lows.append(lo)
            highs.append(hi)
        note = "stretched per band from the 2nd-98th percentile to 0..255"
        return _Scaling("linear", np.array(lows), np.array(highs), note)

    @staticmethod
    def _rio_window(row: int, col: int, height: int, width: int):
        from rasterio.windows import Window as RioWindow

        return RioWindow(col, row, width, height)

    def read(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels at the given (reflected) row and column indices of this source.

        Returns:
            ``(pixels, valid)``: ``(len(rows), len(cols), bands)`` array in 0..255 units (uint8 or
            float32) and a boolean ``(len(rows), len(cols))`` validity mask.
        """
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        c0, c1 = int(cols.min()), int(cols.max()) + 1
        win = self._rio_window(self._row_off + r0, self._col_off + c0, r1 - r0, c1 - c0)
        try:
            data = self._ds.read(list(self.bands), window=win)
            masks = self._ds.read_masks(list(self.bands), window=win) if self._masked else None
        except Exception as exc:  # noqa: BLE001 - GDAL read errors surface as various rasterio errors
            raise InputError(
                f"reading {self.path.name} failed at rows {r0}-{r1}, columns {c0}-{c1} ({_gdal_reason(exc)}); "
                "the file may be truncated or corrupt"
            ) from exc
        index = _take_index(rows - r0, cols - c0)
        pixels = np.moveaxis(data, 0, -1)[index]
        valid = masks.max(axis=0)[index] > 0 if masks is not None else np.ones(pixels.shape[:2], bool)
        if pixels.dtype.kind == "f":
            finite = np.isfinite(pixels).all(axis=-1)
            valid &= finite
            pixels = np.where(finite[..., None], pixels, 0)
        return self._scale.apply(pixels), valid

    @property
    def has_mask(self) -> bool:
        return self._masked

    def close(self) -> None:
        if getattr(self, "_ds", None) is not None and self._ds is not self._src:
            self._ds.close()
        self._src.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _take_index(rows: np.ndarray, cols: np.ndarray):
    """Index for the read block: plain slices when no reflection is involved (no copy), else ``np.ix_``."""

    def as_slice(idx: np.ndarray):
        if idx.size and idx[0] == 0 and np.array_equal(idx, np.arange(idx.size)):
            return slice(0, idx.size)
        return None

    rs, cs = as_slice(rows), as_slice(cols)
    if rs is not None and cs is not None:
        return rs, cs
    return np.ix_(rows, cols)


@dataclass(frozen=True)
class _Scaling:
    kind: str  # "none" or "linear"
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    note: str = ""

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return pixels if pixels.dtype == np.uint8 else pixels.astype(np.float32)
        scaled = (pixels.astype(np.float32) - self.low.astype(np.float32)) / (self.high - self.low).astype(np.float32)
        return np.clip(scaled * 255.0, 0.0, 255.0)

    def describe(self) -> str:
        if self.kind == "none":
            return self.note or "none"
        return self.note


def _all_valid():
    from rasterio.enums import MaskFlags

    return MaskFlags.all_valid


def _gdal_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _fmt_m(size_m: tuple[float, float]) -> str:
    v = math.sqrt(size_m[0] * size_m[1])
    return f"{v:.3g} m"


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:.3g}x" if ratio >= 1 else f"1/{1 / ratio:.3g} of"


def silence_rasterio_warnings() -> None:
    """rasterio warns about georeferencing on CRS-less rasters; we report that ourselves."""
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
