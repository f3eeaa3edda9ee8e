"""Import segmentation models exported for the Deepness QGIS plugin: an ONNX file in, a bundle out.

Deepness (PUTvision/qgis-plugin-deepness) stores what it needs to run a model as JSON strings in the
ONNX ``metadata_props``: ``model_type``, ``class_names``, ``resolution`` (cm/px), ``tiles_size``,
``tiles_overlap`` (% of the tile), ``standardization_mean``/``_std`` (applied to ``pixel / 255``) and
``seg_thresh``. Models in the wild lack any of them and differ in their graphs (fixed or dynamic
batch, one or several outputs, softmax or sigmoid, with or without a class axis, an output covering
only the centre of the tile). This module reads both, asks for what is missing instead of guessing
(class names, pixel size, tile size), and writes a normal bundle JSON whose ``onnx`` entry tells
:mod:`backend.onnx_runtime` how to turn the chosen output into per-class scores.

Only onnxruntime and numpy are needed (the plugin's lean runtime has no ``onnx`` package).
"""

from __future__ import annotations

import colorsys
import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from backend.bundle import ModelBundle, OnnxExport, Preprocessing
from backend.contract import LANDCOVER_CLASSES, NODATA, ONNX_ARCHITECTURE, ClassInfo
from backend.errors import InputError, ModelError
from backend.onnx_runtime import file_sha256, import_onnxruntime

SEGMENTOR = "Segmentor"
#: Colours for classes that are not LandCover.ai's: colour-blind-safe and mutually distinct first (Okabe-Ito
#: and Tableau), then generated. Assigned by position, so the same class list always gets the same colours.
EXTRA_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
    (204, 121, 167), (148, 103, 189), (140, 86, 75), (23, 190, 207), (188, 189, 34), (227, 119, 194),
    (255, 187, 120), (152, 223, 138), (174, 199, 232), (197, 176, 213),
)
DEFAULT_BATCH = 4  # tiles per call for graphs with a dynamic batch (Deepness tiles are often 512 px)


# ----------------------------------------------------------------------------------- metadata

@dataclass(frozen=True)
class DeepnessMetadata:
    """The Deepness keys of an ONNX file's metadata, parsed (None where a key is absent).

    Attributes:
        model_type: ``Segmentor``, ``Detector``, ``Regressor`` ... (None: not stated).
        class_names: one ``{id: name}`` mapping per graph output (Deepness allows a dict or a list).
        resolution_cm: centimetres per pixel the model was trained at.
        tiles_size: tile side in pixels.
        tiles_overlap: overlap as a percentage of the tile.
        mean, std: per-channel standardisation of ``pixel / 255``.
        seg_thresh: sigmoid threshold.
        raw: every metadata value as parsed JSON (kept in the bundle's provenance).
    """

    model_type: str | None = None
    class_names: tuple[dict[int, str], ...] = ()
    resolution_cm: float | None = None
    tiles_size: int | None = None
    tiles_overlap: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    seg_thresh: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resolution_cm is not None and not (self.resolution_cm > 0 and math.isfinite(self.resolution_cm)):
            raise ModelError(f"the model's resolution {self.resolution_cm} cm/px is not a positive number; "
                             "pass --gsd-m METRES")
        if self.tiles_size is not None and self.tiles_size < 8:
            raise ModelError(f"the model's tiles_size {self.tiles_size} is too small; pass --tile-size")
        if self.tiles_overlap is not None and not 0 <= self.tiles_overlap < 100:
            raise ModelError(f"the model's tiles_overlap {self.tiles_overlap} % is not in 0..100")
        if self.seg_thresh is not None and not 0 < self.seg_thresh < 1:
            raise ModelError(f"the model's seg_thresh {self.seg_thresh} is not between 0 and 1")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ModelError(f"the model's standardization_std {list(self.std)} must be positive")


def parse_metadata(props: Mapping[str, str]) -> DeepnessMetadata:
    """Parse Deepness's ``metadata_props`` (JSON strings; plain strings are taken as they are)."""
    raw = {key: _json_value(value) for key, value in props.items()}
    try:
        return DeepnessMetadata(
            model_type=None if raw.get("model_type") is None else str(raw["model_type"]),
            class_names=_class_name_maps(raw.get("class_names")),
            resolution_cm=_optional(raw.get("resolution"), float, "resolution"),
            # Deepness's documentation says "tiles_size"; its loader (and our export) also write "tile_size".
            tiles_size=_optional(raw.get("tiles_size", raw.get("tile_size")), int, "tiles_size"),
            tiles_overlap=_optional(raw.get("tiles_overlap"), float, "tiles_overlap"),
            mean=_channel_values(raw.get("standardization_mean"), "standardization_mean"),
            std=_channel_values(raw.get("standardization_std"), "standardization_std"),
            seg_thresh=_optional(raw.get("seg_thresh"), float, "seg_thresh"),
            raw=raw,
        )
    except (TypeError, ValueError) as exc:
        raise ModelError(f"the model's Deepness metadata is malformed ({exc})") from exc


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text  # some exporters store bare strings such as Segmentor


def _optional(value: Any, kind: type, key: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, list | dict):
        raise ValueError(f"{key} is {value!r}, not a single number")
    return kind(value)


def _channel_values(value: Any, key: str) -> tuple[float, ...] | None:
    """One value per RGB channel (a single number applies to all three)."""
    if value is None:
        return None
    values = [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)]
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"{key} has {len(values)} values; Landcover feeds 3 channels (RGB)")
    return tuple(values)


def _class_name_maps(value: Any) -> tuple[dict[int, str], ...]:
    """``{"0": "a", ...}`` or ``[{...}, {...}]`` (one per output) -> a tuple of ``{0: "a", ...}``."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    maps = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"class_names must be a dict of id: name (or a list of them), got {item!r}")
        maps.append({int(k): str(v) for k, v in item.items()})
    return tuple(maps)


# -------------------------------------------------------------------------------------- graph

@dataclass(frozen=True)
class TensorInfo:
    """An ONNX graph input or output: its name, shape (None for dynamic dimensions) and element type."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # onnxruntime's spelling, e.g. "tensor(float)"

    @property
    def is_float(self) -> bool:
        return self.dtype in ("tensor(float)", "tensor(double)", "tensor(float16)")

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} {dims} {self.dtype.removeprefix('tensor(').rstrip(')')}"


@dataclass(frozen=True)
class GraphInfo:
    """What an ONNX file takes and gives, plus its Deepness metadata."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metadata: DeepnessMetadata


def inspect_onnx(path: Path) -> tuple[Any, GraphInfo]:
    """Open ``path`` with onnxruntime: ``(session, graph info)``; a file that is not ONNX is a clear error."""
    ort = import_onnxruntime()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises untyped errors for anything it cannot read
        head = path.read_bytes()[:64].lstrip().lower() if path.is_file() else b""
        hint = " (it looks like a web page: is the URL a download link?)" if head.startswith((b"<", b"<!doc")) else ""
        raise ModelError(f"{path.name} is not an ONNX model onnxruntime can load{hint}: "
                         f"{type(exc).__name__}: {str(exc)[:160]}") from exc
    meta = parse_metadata(dict(session.get_modelmeta().custom_metadata_map))

    def info(t: Any) -> TensorInfo:
        return TensorInfo(t.name, tuple(d if isinstance(d, int) and d > 0 else None for d in t.shape), t.type)

    graph = GraphInfo(tuple(info(t) for t in session.get_inputs()), tuple(info(t) for t in session.get_outputs()),
                      meta)
    return session, graph


# ------------------------------------------------------------------------------------ options

@dataclass(frozen=True)
class ImportOptions:
    """What the user says about a model, overriding (or supplying) its metadata.

    Attributes:
        name: model name (default: the file name).
        classes: class names in output order (``--classes``).
        gsd_m: metres per pixel (``--gsd-m``).
        output: index of the graph output to use (``--output``).
        tile_size: input tile side when the graph and metadata do not fix it (``--tile-size``).
    """

    name: str | None = None
    classes: tuple[str, ...] | None = None
    gsd_m: float | None = None
    output: int = 0
    tile_size: int | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            names = tuple(str(c).strip() for c in self.classes)
            if not names or not all(names):
                raise InputError("--classes needs class names separated by commas, e.g. background,tree,water")
            if len(set(names)) != len(names):
                raise InputError(f"--classes names a class twice: {','.join(names)}")
            object.__setattr__(self, "classes", names)
        if self.gsd_m is not None and not (self.gsd_m > 0 and math.isfinite(self.gsd_m)):
            raise InputError(f"--gsd-m {self.gsd_m} must be a positive number of metres per pixel, e.g. 0.25")
        if self.output < 0:
            raise InputError(f"--output {self.output} must be 0 or more (the index of the model's output)")
        if self.tile_size is not None and self.tile_size < 8:
            raise InputError(f"--tile-size {self.tile_size} must be at least 8 pixels")
        if self.name is not None and not self.name.strip():
            raise InputError("--name must not be empty")


def parse_class_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; empty -> None."""
    if text is None or not text.strip():
        return None
    return tuple(part.strip() for part in text.split(","))


# --------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class ReadoutPlan:
    """How to run an imported graph: its tile, batch, the output used and how that output encodes classes."""

    input_tile: int
    fixed_batch: int | None
    output: int
    output_kind: str
    class_axis: bool
    channels: int  # class channels of the output (1 for sigmoid, 0 without a class axis)
    context_margin: int

    def __post_init__(self) -> None:
        if self.input_tile - 2 * self.context_margin < 1:
            raise ModelError(f"the output covers nothing of the {self.input_tile} px input tile")


def plan_readout(session: Any, graph: GraphInfo, options: ImportOptions) -> ReadoutPlan:
    """Check the graph's input and output and decide how to run it (one probe run resolves dynamic sizes)."""
    if len(graph.inputs) != 1:
        raise ModelError(f"the model has {len(graph.inputs)} inputs; Landcover feeds exactly one image tensor")
    inp = graph.inputs[0]
    if len(inp.shape) != 4:
        raise ModelError(f"the model's input {inp.describe()} is not a batch of images (N x 3 x H x W)")
    if inp.shape[1] != 3:
        layout = " (channels last: Deepness models take channels first, N x 3 x H x W)" if inp.shape[3] == 3 else ""
        raise ModelError(f"the model's input {inp.describe()} takes {inp.shape[1] or 'a variable number of'} "
                         f"channels{layout}; Landcover feeds 3-band RGB tiles")
    if not inp.is_float:
        raise ModelError(f"the model's input {inp.describe()} is not floating point; Deepness models take float32")
    if not 0 <= options.output < len(graph.outputs):
        listed = ", ".join(f"{i}: {o.describe()}" for i, o in enumerate(graph.outputs))
        raise InputError(f"--output {options.output} does not exist; the model's outputs are {listed}")
    tile = _input_tile(inp, graph.metadata, options)
    fixed_batch = inp.shape[0]
    out_info = graph.outputs[options.output]
    # One probe on a blank tile gives the real output shape and type, whatever the graph declares.
    probe = np.zeros((fixed_batch or 1, 3, tile, tile), np.float32)
    try:
        raw = np.asarray(session.run([out_info.name], {inp.name: probe})[0])
    except Exception as exc:  # onnxruntime's own error types
        raise ModelError(f"the model does not run on a {tile} x {tile} tile ({type(exc).__name__}: "
                         f"{str(exc)[:160]}); pass the tile size it was made for with --tile-size") from exc
    return _plan_from_output(raw, out_info, tile, fixed_batch, options.output)


def _input_tile(inp: TensorInfo, meta: DeepnessMetadata, options: ImportOptions) -> int:
    h, w = inp.shape[2], inp.shape[3]
    if h is not None and w is not None:
        if h != w:
            raise ModelError(f"the model's input {inp.describe()} is not square; Landcover tiles are square")
        if options.tile_size is not None and options.tile_size != h:
            raise InputError(f"--tile-size {options.tile_size} does not fit the model, whose input is {h} x {w}")
        return h
    tile = options.tile_size or meta.tiles_size
    if tile is None:
        raise ModelError(f"the model's input {inp.describe()} has no fixed size and no tiles_size metadata; "
                         "give the tile size it was trained on with --tile-size PIXELS (in QGIS: Tile size)")
    return int(tile)


def _plan_from_output(raw: np.ndarray, info: TensorInfo, tile: int, fixed_batch: int | None,
                      index: int) -> ReadoutPlan:
    """Classify the probe's output: ``N x C x H x W`` (softmax / sigmoid) or ``N x H x W`` (labels / probability)."""
    if raw.ndim == 4:
        channels, size = raw.shape[1], raw.shape[2:]
    elif raw.ndim == 3:
        channels, size = 0, raw.shape[1:]
    else:
        raise ModelError(f"output {index} ({info.describe()}) gives shape {raw.shape}; a segmentation output is "
                         "N x C x H x W or N x H x W (choose another with --output)")
    if size[0] != size[1] or size[0] > tile or (tile - size[0]) % 2:
        raise ModelError(f"output {index} is {size[0]} x {size[1]} for a {tile} px input tile; Landcover needs the "
                         "whole tile or a centred square part of it (choose another with --output)")
    margin = (tile - size[0]) // 2
    is_float = raw.dtype.kind == "f"
    if channels >= 2:
        if not is_float:
            raise ModelError(f"output {index} has {channels} integer channels; expected per-class scores (float)")
        kind, class_axis = "softmax", True
    elif channels == 1:
        kind, class_axis = ("sigmoid" if is_float else "labels"), True
    else:
        # No class axis: integers are class ids; floats are one class's probability (see docs/models.md),
        # unless the user names more than two classes (then they are class ids stored as floats).
        kind, class_axis = ("sigmoid" if is_float else "labels"), False
    return ReadoutPlan(tile, fixed_batch, index, kind, class_axis, channels, margin)


# ------------------------------------------------------------------------------------ classes

def class_infos(names: Sequence[str]) -> tuple[ClassInfo, ...]:
    """Classes with colours: LandCover.ai's names keep theirs; others get distinct, stable colours."""
    known = {c.name.lower(): c.color for c in LANDCOVER_CLASSES}
    colors: list[tuple[int, int, int] | None] = [known.get(n.lower()) for n in names]
    used = {c for c in colors if c is not None}
    palette = iter(_palette())
    for i, color in enumerate(colors):
        if color is None:
            color = next(c for c in palette if c not in used)
            used.add(color)
            colors[i] = color
    return tuple(ClassInfo(i, name, color) for i, (name, color) in enumerate(zip(names, colors, strict=True)))


def _palette():
    """The fixed palette, then golden-angle hues for as many more classes as needed."""
    yield from EXTRA_PALETTE
    for k in range(NODATA):
        hue = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65 + 0.3 * (k % 2), 0.85 - 0.25 * ((k // 2) % 2))
        yield (round(r * 255), round(g * 255), round(b * 255))


def class_names_for(plan: ReadoutPlan, meta: DeepnessMetadata, options: ImportOptions) -> tuple[str, ...]:
    """The class names in output order: ``--classes``, else the metadata; missing ones are asked for."""
    given = options.classes
    if given is None and meta.class_names:
        maps = meta.class_names
        chosen = maps[plan.output] if plan.output < len(maps) else (maps[0] if len(maps) == 1 else None)
        if chosen is None:
            raise ModelError(f"the model's class_names lists {len(maps)} outputs, none for output {plan.output}; "
                             "pass --classes a,b,c")
        if sorted(chosen) != list(range(len(chosen))):
            raise ModelError(f"the model's class_names ids {sorted(chosen)} are not 0..{len(chosen) - 1}; "
                             "pass --classes a,b,c")
        given = tuple(chosen[i] for i in range(len(chosen)))
    if given is None:
        raise ModelError("the model has no class_names; give them with --classes a,b,c (in QGIS: the model "
                         "manager's Class names), one name per output class, in order")
    if plan.output_kind == "sigmoid":
        # One probability of one class: Landcover adds the "background" it is weighed against.
        if len(given) == 1:
            return ("background", given[0]) if given[0].lower() != "background" else ("other", given[0])
        if len(given) == 2:
            return given
        if not plan.class_axis:
            return given  # more than two names for N x H x W floats: class ids stored as floats
        raise ModelError(f"the model's output is one class against background, but {len(given)} class names "
                         "were given; pass --classes NAME (or background,NAME)")
    if plan.output_kind == "softmax" and len(given) != plan.channels:
        raise ModelError(f"the model's output has {plan.channels} classes but {len(given)} names were given "
                         f"({','.join(given)}); pass --classes with {plan.channels} names")
    if len(given) < 2:
        raise ModelError("a model needs at least 2 classes; pass --classes a,b")
    return given


# ------------------------------------------------------------------------------------- import

def model_key(name: str) -> str:
    """The folder name for a model: lowercase letters, digits, ``.``, ``_`` and ``-`` (never hidden)."""
    key = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower()).strip("-.")
    if not key:
        raise InputError(f"model name {name!r} has no letters or digits; pass --name NAME")
    return key


def build_bundle(onnx_path: Path, options: ImportOptions, provenance: Mapping[str, Any]) -> ModelBundle:
    """The :class:`ModelBundle` describing the Deepness ONNX file ``onnx_path`` (nothing is written).

    Raises:
        ModelError: the file is not a segmentation model Landcover can run, or metadata is missing
            (the message names the option that supplies it).
    """
    session, graph = inspect_onnx(onnx_path)
    meta = graph.metadata
    if meta.model_type is not None and meta.model_type != SEGMENTOR:
        raise ModelError(f"the model is a Deepness {meta.model_type!r} model; Landcover runs only segmentation "
                         f"models (model_type {SEGMENTOR!r})")
    plan = plan_readout(session, graph, options)
    names = class_names_for(plan, meta, options)
    if plan.output_kind == "sigmoid" and len(names) > 2:
        plan = ReadoutPlan(plan.input_tile, plan.fixed_batch, plan.output, "labels", False, 0, plan.context_margin)
    gsd_m = options.gsd_m if options.gsd_m is not None else (
        None if meta.resolution_cm is None else meta.resolution_cm / 100.0)
    if gsd_m is None:
        raise ModelError("the model has no resolution metadata; give its pixel size with --gsd-m METRES "
                         "(e.g. --gsd-m 0.25; in QGIS: the model manager's Pixel size)")
    tile = plan.input_tile - 2 * plan.context_margin  # the engine tiles on the output's grid
    overlap = None
    if meta.tiles_overlap is not None:
        overlap = min(tile // 2, round(meta.tiles_overlap / 100.0 * plan.input_tile))
    name = options.name or onnx_path.stem
    onnx = OnnxExport(
        file=onnx_path, sha256=file_sha256(onnx_path), layout="NCHW", deepness=True,
        output=plan.output, output_kind=plan.output_kind, class_axis=plan.class_axis,
        threshold=meta.seg_thresh if meta.seg_thresh is not None else 0.5,
        context_margin=plan.context_margin, fixed_batch=plan.fixed_batch,
    )
    return ModelBundle(
        name=name, architecture=ONNX_ARCHITECTURE, backbone="deepness", tile_size=tile, input_bands=3,
        gsd_m=gsd_m, classes=class_infos(names), default_overlap=overlap,
        default_batch_size=plan.fixed_batch or DEFAULT_BATCH,
        preprocessing=Preprocessing(255.0, meta.mean or (0.0, 0.0, 0.0), meta.std or (1.0, 1.0, 1.0)),
        weights=None, onnx=onnx,
        provenance={
            **provenance,
            "imported": datetime.now(UTC).isoformat(timespec="seconds"),
            "format": "deepness",
            "deepness_metadata": dict(meta.raw),
            "graph": {"inputs": [t.describe() for t in graph.inputs],
                      "outputs": [t.describe() for t in graph.outputs]},
        },
    )


def write_deepness_bundle(onnx_path: Path, folder: Path, key: str, options: ImportOptions,
                          provenance: Mapping[str, Any]) -> Path:
    """Copy ``onnx_path`` to ``folder/<key>.onnx`` and write ``folder/<key>.json`` describing it.

    Returns:
        The bundle JSON path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.onnx"
    shutil.copyfile(onnx_path, target)
    bundle = build_bundle(target, options, provenance)
    return bundle.save(folder / f"{key}.json")
