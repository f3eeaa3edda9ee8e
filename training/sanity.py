"""Real-scene sanity suite: does a model misread real orthophotos? (``python -m training sanity``).

Real rasters carry no masks, but a person looking at one can say which classes are *certainly absent* (a
crop field has no water) and which are *certainly present* (a river scene has water). Those statements live
in an expectations file beside the rasters (``tests/data/real/expectations.json``), each with a note of what
the scene shows. A scene passes when every absent class covers less than ``MAX_ABSENT`` of the valid pixels and
every present class at least ``MIN_PRESENT``. Where a person can also estimate how much of the scene a class
covers (a forest scene is mostly woodland), ``covers`` gives a wide range, so that a model cannot pass by
finding a few stray patches of the forest and calling the rest field. Models are run as a user would:
``segment --resample`` at the model's pixel size, optionally on a window of the raster. A scene may name a
``nodata`` value its file does not flag (a black collar of no imagery); it is then run on a copy that flags it, as
a user would with ``gdal_translate -a_nodata``, so no class gets credit for pixels that are not imagery.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import atomic_path
from training.errors import TrainingError

MAX_ABSENT = 0.02  # an absent class may cover less than 2 % of the valid pixels (stray pixels, not a misreading)
MIN_PRESENT = 0.005  # a present class must cover at least 0.5 %: found, not a few stray pixels


@dataclass(frozen=True)
class Scene:
    """One real raster and what is certainly in it and not."""

    raster: str  # file name, relative to the expectations file
    note: str  # what the scene shows (written after looking at it)
    absent: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    window: tuple[int, int, int, int] | None = None  # col_off, row_off, width, height of the raster
    nodata: float | None = None  # a no-imagery value the file does not flag
    covers: dict[str, tuple[float, float]] = field(default_factory=dict)  # class -> (low %, high %) of valid pixels

    def __post_init__(self) -> None:
        if set(self.absent) & set(self.present):
            raise TrainingError(f"{self.raster}: a class cannot be both absent and present")
        if not self.absent and not self.present:
            raise TrainingError(f"{self.raster}: say at least one class that is certainly absent or present")
        for name, (low, high) in self.covers.items():
            if not 0 <= low < high <= 100:
                raise TrainingError(f"{self.raster}: covers {name!r} needs 0 <= low < high <= 100 (per cent of the "
                                    f"valid pixels), got {low}-{high}")
            if name in self.absent and low > 0:
                raise TrainingError(f"{self.raster}: {name} is certainly absent, so it cannot cover at least {low} %")


@dataclass
class SceneResult:
    scene: Scene
    shares: dict[str, float]  # class -> share of the valid pixels
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_scenes(path: Path) -> list[Scene]:
    """The scenes of an expectations file (a JSON list of objects with Scene's fields)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read the expectations file {path} ({exc})") from exc
    scenes = []
    for entry in data:
        entry = {**entry, "absent": tuple(entry.get("absent", ())), "present": tuple(entry.get("present", ()))}
        if entry.get("window") is not None:
            entry["window"] = tuple(entry["window"])
        entry["covers"] = {name: (float(lo), float(hi)) for name, (lo, hi) in entry.get("covers", {}).items()}
        scenes.append(Scene(**entry))
    return scenes


def judge(scene: Scene, shares: dict[str, float]) -> SceneResult:
    """Compare class shares with the scene's expectations."""
    unknown = [c for c in (*scene.absent, *scene.present, *scene.covers) if c not in shares]
    if unknown:
        raise TrainingError(f"{scene.raster}: the model has no class {unknown[0]!r}; its classes are "
                            f"{', '.join(shares)}")
    failures = [f"{c} covers {100 * shares[c]:.1f} % (certainly absent: < {100 * MAX_ABSENT:g} %)"
                for c in scene.absent if shares[c] >= MAX_ABSENT]
    failures += [f"{c} covers {100 * shares[c]:.2f} % (certainly present: >= {100 * MIN_PRESENT:g} %)"
                 for c in scene.present if shares[c] < MIN_PRESENT and c not in scene.covers]  # said once
    failures += [f"{c} covers {100 * shares[c]:.1f} % (a person sees {low:g}-{high:g} %)"
                 for c, (low, high) in scene.covers.items() if not low <= 100 * shares[c] <= high]
    return SceneResult(scene, shares, failures)


def run_scene(bundle: Any, scene: Scene, folder: Path, workdir: Path, runtime: Any = "auto",
              precision: str = "auto", figures: Path | None = None) -> SceneResult:
    """Segment the scene as a user would (``--resample``) and judge the class shares.

    With ``figures``, also write ``figures/<raster stem>.png``: the scene as the model saw it beside its classes.
    """
    from backend.inference import segment
    from backend.raster_io import Window

    source = folder / scene.raster
    if scene.nodata is not None:
        source = _flag_nodata(source, scene.nodata, workdir)
    stem = Path(scene.raster).stem
    classes = workdir / f"{stem}.tif"
    result = segment(source, classes, bundle, resample=True,
                     window=Window(*scene.window) if scene.window else None, runtime=runtime, precision=precision)
    if figures is not None:
        write_figure(source, classes, [c.color for c in bundle.classes], figures / f"{stem}.png", scene.window)
    valid = max(result.areas.valid_pixels, 1)
    shares = {c.name: n / valid for c, n in zip(bundle.classes, result.areas.counts, strict=True)}
    return judge(scene, shares)


def _flag_nodata(source: Path, nodata: float, workdir: Path) -> Path:
    """A copy of ``source`` in ``workdir`` whose bands flag ``nodata``."""
    import shutil

    import rasterio

    copy = workdir / f"nodata-{source.name}"
    shutil.copyfile(source, copy)
    with rasterio.open(copy, "r+") as ds:
        ds.nodata = nodata
    return copy


def write_figure(source: Path, classes: Path, colours: list[tuple[int, int, int]], path: Path,
                 window: tuple[int, int, int, int] | None = None) -> Path:
    """A PNG of ``source`` (averaged onto the class grid) beside ``classes`` in ``colours`` (no data: black).

    Scenes under 400 px are enlarged by whole factors, so a 99 px drone crop can still be looked at.
    """
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with rasterio.open(classes) as ds:
        ids = ds.read(1)
    h, w = ids.shape
    with rasterio.open(source) as src:
        rgb = src.read([1, 2, 3] if src.count >= 3 else [1, 1, 1], out_shape=(3, h, w),
                       window=Window(*window) if window else None, resampling=Resampling.average)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colours)] = np.asarray(colours, np.uint8)
    if rgb.dtype != np.uint8:  # stretch 2-98 % to 8 bits for the eye
        low, high = np.percentile(rgb, (2, 98))
        rgb = np.clip((rgb - low) * 255.0 / max(high - low, 1e-9), 0, 255)
    side = np.hstack([np.moveaxis(rgb, 0, 2).astype(np.uint8), palette[ids]])
    scale = max(1, 400 // max(h, 1))
    image = Image.fromarray(side).resize((side.shape[1] * scale, side.shape[0] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def run_suite(bundle: Any, expectations: Path, runtime: Any = "auto", precision: str = "auto",
              figures: Path | None = None) -> list[SceneResult]:
    """Every scene of ``expectations`` through ``bundle`` (with ``figures``: a PNG per scene there)."""
    expectations = Path(expectations)
    with tempfile.TemporaryDirectory(prefix="landcover-sanity-") as tmp:
        return [run_scene(bundle, scene, expectations.parent, Path(tmp), runtime, precision, figures)
                for scene in load_scenes(expectations)]


def report(results: list[SceneResult], model: str) -> str:
    """A Markdown table: per scene, the classes' shares, the expectations and the verdict."""
    names = list(results[0].shares) if results else []
    lines = [f"Real-scene sanity suite, model `{model}` (absent: < {100 * MAX_ABSENT:g} % of valid pixels; present: "
             f">= {100 * MIN_PRESENT:g} %; estimated: the share a person sees, with a wide margin):", "",
             "| scene | " + " | ".join(names) + " | certainly absent | certainly present | estimated | verdict |",
             "|---|" + "---|" * (len(names) + 4)]
    for r in results:
        cells = [f"{100 * r.shares[n]:.1f} %" for n in names]
        verdict = "pass" if r.passed else "FAIL: " + "; ".join(r.failures)
        estimated = ", ".join(f"{c} {lo:g}-{hi:g} %" for c, (lo, hi) in r.scene.covers.items()) or "—"
        lines.append(f"| {r.scene.raster} | " + " | ".join(cells) + f" | {', '.join(r.scene.absent) or '—'} | "
                     f"{', '.join(r.scene.present) or '—'} | {estimated} | {verdict} |")
    passed = sum(r.passed for r in results)
    lines += ["", f"{passed} of {len(results)} scenes pass."]
    return "\n".join(lines) + "\n"
