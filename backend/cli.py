"""Command line: ``python -m backend segment | batch | models [list|add|remove] | info | preview | export-onnx``.

Exit codes: 0 success, 2 bad input or usage (one line on stderr naming the problem and the fix),
1 anything else (a bug: the traceback is printed), 130 interrupted or cancelled. With
``--progress json`` stdout carries the worker protocol of :mod:`backend.contract`: one JSON object
per line, the last one ``{"stage": "done", ...}`` or ``{"stage": "error", "kind": ..., "message": ...}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from backend import __version__
from backend.contract import (
    BATCH_DEFAULT_CHUNK,
    EXIT_OK,
    EXIT_USAGE,
    PRECISIONS,
    PROGRESS_MODES,
    RUNTIMES,
    SETUP_HINT,
    TTA_MODES,
    BatchArgs,
    CancelledError,
    DependencyError,
    DoneEvent,
    ErrorEvent,
    InfoEvent,
    InputError,
    InternalError,
    LandcoverError,
    SegmentArgs,
    encode_event,
)

#: How to install what the backend needs (the plugin's managed runtime, or the source tree's .venv).
INSTALL_HINT = SETUP_HINT


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line plus a pointer to --help (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m backend",
        description="Land-cover segmentation of orthophotos (background, building, woodland, water, road).",
    )
    parser.add_argument("--version", action="version", version=f"landcover backend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    seg = sub.add_parser(
        "segment",
        help="segment an orthophoto into a styled class GeoTIFF",
        description="Segment INPUT into a uint8 class GeoTIFF OUTPUT (nodata 255) with a QGIS style (.qml) "
        "and class areas (.areas.csv/.areas.json) beside it.",
    )
    seg.add_argument("input", metavar="INPUT", help="orthophoto (GeoTIFF or any GDAL raster)")
    seg.add_argument("output", metavar="OUTPUT", help="class raster to write (.tif)")
    seg.add_argument(
        "--model", help="bundle .json path, model name/key, or untrained:ARCH:BACKBONE (default: the bundled default)"
    )
    seg.add_argument("--overlap", type=int, help="tile overlap in pixels, 0..tile/2 (default: the model's)")
    seg.add_argument("--batch-size", type=int, help="tiles per prediction call (default: the model's)")
    seg.add_argument("--bands", help="1-based input bands to use as RGB, e.g. 1,2,3 (default: first non-alpha bands)")
    seg.add_argument("--window", help="only this pixel window of the input: COL_OFF,ROW_OFF,WIDTH,HEIGHT")
    seg.add_argument("--resample", action="store_true", help="resample the input to the model's pixel size first")
    seg.add_argument("--confidence", metavar="PATH", help="also write the top-class probability raster here")
    seg.add_argument("--runtime", default="auto", choices=RUNTIMES,
                     help="inference runtime: auto|onnx|tensorflow (default auto: ONNX Runtime when the model has an "
                     "ONNX export and onnxruntime is installed, else TensorFlow)")
    seg.add_argument("--precision", default="auto", choices=PRECISIONS,
                     help="auto|fp32|int8: which ONNX export runs (default auto: the model's INT8 export on CPUs "
                     "with VNNI/AMX/dot-product instructions, where it is about 1.8x faster, else float)")
    seg.add_argument("--tta", default="none", choices=TTA_MODES,
                     help="test-time augmentation: none (default), flip (tile + mirror, 2x time) or d4 (4 rotations "
                     "x mirror, 8x time); averages the class probabilities, usually slightly more accurate")
    seg.add_argument("--seed", type=int, default=0, help="random seed for untrained:... models (default 0)")
    seg.add_argument(
        "--progress", choices=PROGRESS_MODES, default="bar",
        help="bar (default), json (one JSON object per line on stdout, for the QGIS plugin) or none",
    )

    bat = sub.add_parser(
        "batch", help="segment many sheets or a large mosaic on Dask (local or a cluster), resumable",
        description="Segment every INPUT — rasters, folders of rasters, glob patterns; a raster larger than --chunk "
        "(a mosaic, e.g. a VRT) is split into chunks on one shared tile grid, identical to one run over it — into "
        "OUTDIR: one class raster per sheet/chunk, mosaic.vrt (+ .qml) over them, areas.csv/areas.json, and "
        "manifest.jsonl (one line per finished item). Runs on a Dask LocalCluster sized to this machine, or on an "
        "existing cluster with --scheduler. Exit code 2 when any item failed (the others are complete).",
    )
    bat.add_argument("inputs", nargs="+", metavar="INPUT", help="raster, folder of rasters, or glob pattern")
    bat.add_argument("outdir", metavar="OUTDIR", help="folder for the outputs (created)")
    bat.add_argument("--model", help="bundle .json path or model name/key (default: the bundled default); "
                     "workers elsewhere must see the same path")
    bat.add_argument("--workers", type=int, help="local worker processes (default: cores / threads per worker)")
    bat.add_argument("--threads-per-worker", type=int, help="inference threads per worker (default 1)")
    bat.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786, "
                     "instead of a local cluster (workers need the runtime and the same paths)")
    bat.add_argument("--resume", action="store_true",
                     help="continue a batch in OUTDIR: skip items whose outputs match the manifest, redo the rest")
    bat.add_argument("--chunk", type=int, default=BATCH_DEFAULT_CHUNK, metavar="PX",
                     help="split rasters larger than this on a side into chunks of about this size (default 8192; "
                     "a multiple of 256)")
    bat.add_argument("--precision", default="auto", choices=PRECISIONS, help="as for segment (default auto)")
    bat.add_argument("--tta", default="none", choices=TTA_MODES, help="as for segment (default none)")
    bat.add_argument("--progress", choices=PROGRESS_MODES, default="bar",
                     help="bar (default), json (worker protocol lines, for the QGIS plugin) or none")

    models = sub.add_parser(
        "models", help="list, add or remove models",
        description="List the bundled and user models (the default action), add a Deepness ONNX model or a "
        "Landcover bundle to the user models folder ($LANDCOVER_MODELS_DIR), or remove one.",
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=_Parser)
    mlist = msub.add_parser("list", help="the model cards of every bundled and user model",
                            description="Name, key, origin, classes, pixel size and provenance of every model.")
    mlist.add_argument("--json", dest="list_json", action="store_true", help="machine-readable output")
    add = msub.add_parser(
        "add", help="add a Deepness ONNX model or a bundle .json (path or URL) to the user models folder",
        description="Add SOURCE — a segmentation .onnx exported for the Deepness QGIS plugin, or a Landcover bundle "
        ".json with its files — from a path or an http(s)/file URL into the user models folder "
        "(<folder>/<key>/<key>.json + the ONNX file). Then 'segment --model NAME' uses it. What the model's "
        "metadata lacks must be given: --classes, --gsd-m, sometimes --tile-size.",
    )
    add.add_argument("source", metavar="PATH_OR_URL", help=".onnx or bundle .json: a path, or an http(s)/file URL")
    add.add_argument("--name", help="model name (default: the file name); its key is the folder name")
    add.add_argument("--classes", help="class names in output order, e.g. background,tree,water (overrides the "
                     "model's class_names)")
    add.add_argument("--gsd-m", type=float, metavar="METRES",
                     help="pixel size the model was trained at, in metres (overrides the model's resolution)")
    add.add_argument("--output", type=int, default=0, metavar="K",
                     help="which of the model's outputs holds the segmentation (default 0)")
    add.add_argument("--tile-size", type=int, metavar="PIXELS",
                     help="input tile size, for models whose input size is neither fixed nor in the metadata")
    add.add_argument("--sha256", metavar="HEX", help="refuse the file unless it has this SHA-256")
    add.add_argument("--replace", action="store_true", help="replace a user model of the same name")
    add.add_argument("--progress", choices=PROGRESS_MODES, default="bar",
                     help="download progress: bar (default), json (worker protocol lines on stdout) or none")
    remove = msub.add_parser("remove", help="remove a user model (never a bundled one)",
                             description="Delete a model from the user models folder by its key or name.")
    remove.add_argument("name", metavar="NAME", help="key or name of a user model")
    remove.add_argument("--progress", choices=PROGRESS_MODES, default="none",
                        help="json: errors as the worker protocol's last line, for the QGIS plugin")

    info = sub.add_parser("info", help="print a model bundle's metadata")
    info.add_argument("model", metavar="MODEL", help="bundle .json path or model name/key")
    info.add_argument("--json", action="store_true", help="print the bundle JSON")

    exp = sub.add_parser(
        "export-onnx",
        help="export a model bundle to ONNX (stored in the bundle; used by --runtime auto|onnx)",
        description="Convert MODEL's network to <bundle>.onnx beside its JSON, check it against TensorFlow and "
        "record its checksum in the JSON. Needs tensorflow + tf2onnx; running it needs only onnxruntime.",
    )
    exp.add_argument("model", metavar="MODEL", help="bundle .json path or model name/key")
    exp.add_argument("--deepness", action="store_true",
                     help="channels-first tensors plus the metadata the Deepness QGIS plugin reads")
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    exp.add_argument("--weights-dtype", choices=("auto", "float16", "float32"), default="auto",
                     help="auto (default): float16 where lossless, i.e. for bundles saved as float16; "
                     "float16: round all weights (smaller, ~1e-3 probability error); float32: no rounding")
    exp.add_argument("--int8", action="store_true",
                     help="also write a static INT8 export (<bundle>.int8.onnx, recorded as \"onnx_int8\"), kept only "
                     "if >= 99.5 %% of calibration pixels keep the float model's class; uses the bundle's existing "
                     "float export when it is valid (no TensorFlow needed then)")
    exp.add_argument("--calibration", action="append", default=[], metavar="DIR|RASTER",
                     help="with --int8: training patches or orthophotos like those the model will map (a raster or a "
                     "folder of rasters; repeatable)")
    exp.add_argument("--tiles", type=int, default=64, metavar="N",
                     help="with --int8: calibration tiles drawn from --calibration (default 64)")
    exp.add_argument("--activations", choices=("uint8", "int8"), default="uint8",
                     help="with --int8: activation type (default uint8, native on VNNI and ARM dot-product CPUs)")

    doctor = sub.add_parser(
        "doctor", help="check that this Python can run models (numpy, rasterio, ONNX Runtime or TensorFlow)",
        description="Import what segmentation needs and report what is missing (exit 2) or which runtimes work.",
    )
    doctor.add_argument("--progress", choices=PROGRESS_MODES, default="bar",
                        help="json: report as the worker protocol's last line, for the QGIS plugin")
    doctor.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="auto (default): either runtime will do; onnx or tensorflow: that one must work")

    prev = sub.add_parser("preview", help="render orthophoto | land cover with legend side by side to a PNG")
    prev.add_argument("image", metavar="ORTHOPHOTO")
    prev.add_argument("classes", metavar="CLASSES", help="class GeoTIFF written by 'segment'")
    prev.add_argument("output", metavar="PNG")
    prev.add_argument("--max-size", type=int, default=1024, help="longest side of each panel in pixels")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_mode = getattr(args, "progress", None) == "json"
    signal.signal(signal.SIGTERM, _terminate)
    commands = {"segment": _segment, "batch": _batch, "models": _models, "info": _info, "preview": _preview,
                "export-onnx": _export_onnx, "doctor": _doctor}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        if args.command == "batch":  # each finished item is complete and recorded in the manifest
            return _report(CancelledError("interrupted: the items finished so far are kept in the output folder; "
                                          "continue with --resume"), json_mode)
        return _report(CancelledError("interrupted: no output was written"), json_mode)
    except ModuleNotFoundError as exc:
        error = DependencyError(f"this Python ({sys.executable}) lacks the package {exc.name!r}; {INSTALL_HINT}")
        return _report(error, json_mode)
    except LandcoverError as exc:
        return _report(exc, json_mode)
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, report it fully
        traceback.print_exc()
        error = InternalError(f"internal error ({type(exc).__name__}: {exc}); please report it with the traceback")
        return _report(error, json_mode)


def _report(error: LandcoverError, json_mode: bool) -> int:
    """The error's one line on stderr (and as the protocol's last line); its kind's exit code."""
    if json_mode:
        print(encode_event(ErrorEvent.from_error(error)), flush=True)
    print(f"error: {error}" if error.kind != "cancelled" else str(error), file=sys.stderr)
    return error.exit_code


def _terminate(signum, frame) -> None:
    # Turn SIGTERM (the plugin's Cancel) into an exception so temporary outputs are removed.
    raise KeyboardInterrupt


def _segment(args: argparse.Namespace) -> int:
    from backend.bundle import resolve_model
    from backend.inference import segment
    from backend.progress import make_progress
    from backend.raster_io import Window

    request = SegmentArgs.from_namespace(args)
    bundle = resolve_model(request.model, seed=request.seed)
    result = segment(
        request.input,
        request.output,
        bundle,
        overlap=request.overlap,
        batch_size=request.batch_size,
        bands=request.bands,
        window=Window(*request.window) if request.window else None,
        resample=request.resample,
        confidence_path=request.confidence,
        progress=make_progress(request.progress),
        runtime=request.runtime,
        precision=request.precision,
        tta=request.tta,
    )
    if request.progress == "json":
        print(encode_event(result.done_event()), flush=True)
    else:
        how = ", ".join(x for x in (result.runtime + (f" {result.precision}" if result.precision else ""),
                                    f"TTA {result.tta}" if result.tta != "none" else "") if x)
        print(f"wrote {result.output} ({result.width} x {result.height} px, {result.tiles_predicted} tiles, "
              f"{result.seconds:.1f} s, {how})", file=sys.stderr)
        print(result.areas.table())
    return EXIT_OK


def _batch(args: argparse.Namespace) -> int:
    from backend.batch import run_batch
    from backend.progress import make_progress

    request = BatchArgs.from_namespace(args)
    result = run_batch(request, make_progress(request.progress))
    summary = result.summary()
    if result.failed:
        raise InputError(summary.replace("\n", "; ") + "; fix or remove them, then rerun with --resume")
    if args.progress == "json":
        print(encode_event(InfoEvent(summary)), flush=True)
        print(encode_event(DoneEvent(output=str(result.mosaic or result.outdir), areas=result.areas,
                                     seconds=round(result.seconds, 3), warnings=tuple(result.warnings))), flush=True)
    else:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(summary)
    return EXIT_OK


def _models(args: argparse.Namespace) -> int:
    action = getattr(args, "models_command", None) or "list"
    if action == "add":
        return _models_add(args)
    if action == "remove":
        return _models_remove(args)
    return _models_list(args.json or getattr(args, "list_json", False))


def _models_list(as_json: bool) -> int:
    from backend.bundle import list_models, model_search_dirs

    listed = list_models()
    if as_json:
        print(json.dumps([
            {"key": m.key, "origin": m.origin, "path": str(m.path), "error": m.error,
             "bundle": m.info.to_dict() if m.info else None, "card": _card(m.info) if m.info else None}
            for m in listed
        ], indent=2))
        return EXIT_OK
    if not listed:
        print("no model bundles found in " + ", ".join(str(p) for _, p in model_search_dirs()))
    for m in listed:
        if not m.info:
            print(f"{m.key}  [{m.origin}]  UNREADABLE: {m.error}\n  {m.path}\n")
            continue
        card = _card(m.info)
        print(f"{m.key}  [{m.origin}]  {card['name']}")
        print(f"  classes:    {', '.join(card['classes'])}")
        gsd = f"{card['gsd_m']:g} m/px" if card["gsd_m"] else "unknown"
        print(f"  pixel size: {gsd}; tile {card['tile_size']} px; {card['model']}")
        if card["provenance"]:
            print(f"  provenance: {card['provenance']}")
        print(f"  path:       {m.path}\n")
    print("also: untrained:ARCH:BACKBONE (random weights, for installation checks and benchmarks)")
    return EXIT_OK


def _card(bundle) -> dict:
    """A model's card: what a person choosing a model needs, from its bundle."""
    prov = bundle.provenance or {}
    parts = []
    if prov.get("source"):
        parts.append(f"imported from {prov['source']}" + (f" (sha256 {prov['source_sha256'][:12]}...)"
                                                          if prov.get("source_sha256") else ""))
    elif prov.get("data"):
        parts.append(f"trained on {str(prov['data'])[:80]}")
    metrics = prov.get("metrics") or {}
    if isinstance(metrics, dict) and isinstance(metrics.get("miou"), int | float):
        parts.append(f"mIoU {metrics['miou']:.3f}")
    model = f"{bundle.architecture}/{bundle.backbone}"
    if bundle.onnx is not None and bundle.onnx.describe():
        model += f" ({bundle.onnx.describe()})"
    return {"name": bundle.name, "classes": bundle.class_names, "gsd_m": bundle.gsd_m, "tile_size": bundle.tile_size,
            "model": model, "provenance": "; ".join(parts)}


def _models_add(args: argparse.Namespace) -> int:
    from backend.deepness import ImportOptions, parse_class_list
    from backend.download import download_progress
    from backend.model_store import AddRequest, add_model

    options = ImportOptions(name=args.name, classes=parse_class_list(args.classes), gsd_m=args.gsd_m,
                            output=args.output, tile_size=args.tile_size)
    request = AddRequest(args.source, options, sha256=args.sha256, replace=args.replace)
    progress = download_progress(args.progress)
    added = add_model(request, progress)
    message = (f"{'replaced' if added.replaced else 'added'} model {added.bundle.name!r} (key {added.key}): "
               f"{len(added.bundle.classes)} classes ({', '.join(added.bundle.class_names)}), "
               f"{added.bundle.gsd_m:g} m/px; use it with 'segment IN OUT --model {added.key}'")
    if args.progress == "json":
        print(encode_event(InfoEvent(message)), flush=True)
        print(encode_event(DoneEvent(output=str(added.bundle.source), areas={})), flush=True)
    else:
        print(message)
    return EXIT_OK


def _models_remove(args: argparse.Namespace) -> int:
    from backend.model_store import remove_model

    removed = remove_model(args.name)
    print(f"removed model {removed.key} ({removed.path.parent})")
    return EXIT_OK


def _info(args: argparse.Namespace) -> int:
    from backend.bundle import resolve_model

    bundle = resolve_model(args.model)
    if args.json:
        data = bundle.to_dict()
        data["path"] = str(bundle.source) if bundle.source else None
        print(json.dumps(data, indent=2))
    else:
        print(bundle.summary())
    return EXIT_OK


def _export_onnx(args: argparse.Namespace) -> int:
    from backend.bundle import resolve_model

    bundle = resolve_model(args.model)
    if not args.int8 and (args.calibration or args.tiles != 64):
        raise InputError("--calibration and --tiles go with --int8")
    if args.int8:
        from backend.quantize import QuantSettings, calibration_rasters, check_tile_count, quantize_from_rasters

        if not args.calibration:
            raise InputError("--int8 needs --calibration DIR|RASTER: training patches or orthophotos like those the "
                             "model will map (not random noise)")
        settings = QuantSettings(activations=args.activations)  # validated before any export work
        check_tile_count(args.tiles)
        for source in args.calibration:
            calibration_rasters(Path(source))
        if not _has_valid_float_export(bundle):
            bundle = _export_float(bundle, args)
        else:
            print(f"using the float export {bundle.onnx.file.name} already in the bundle")
        report = quantize_from_rasters(bundle, [Path(c) for c in args.calibration], args.tiles, settings)
        print(report.summary())
        return EXIT_OK
    _export_float(bundle, args)
    return EXIT_OK


def _export_float(bundle, args: argparse.Namespace):
    from backend.onnx_export import export_onnx

    report = export_onnx(bundle, deepness=args.deepness, opset=args.opset, weights_dtype=args.weights_dtype)
    print(report.summary())
    return report.bundle


def _has_valid_float_export(bundle) -> bool:
    from backend.onnx_runtime import verified_onnx_path

    if bundle.onnx is None:
        return False
    try:
        verified_onnx_path(bundle)
    except LandcoverError:
        return False
    return True


def _preview(args: argparse.Namespace) -> int:
    from backend.preview import render_preview

    out = render_preview(Path(args.image), Path(args.classes), Path(args.output), max_size=args.max_size)
    print(f"wrote {out}")
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    """Import numpy, rasterio and a runtime; what is missing raises :class:`DependencyError`."""
    import importlib

    for name in ("numpy", "rasterio"):
        importlib.import_module(name)  # ModuleNotFoundError becomes a DependencyError in main()
    runtime = _first_runtime() if args.runtime == "auto" else _require_runtime(args.runtime)
    message = f"{sys.executable} can run models with the {runtime} runtime"
    if args.progress == "json":
        print(encode_event(InfoEvent(message)), flush=True)
    else:
        print(f"ok: {message}")
    return EXIT_OK


def _require_runtime(kind: str) -> str:
    """Import runtime ``kind`` (``onnx`` or ``tensorflow``); its DependencyError names the fix."""
    from backend.onnx_runtime import import_onnxruntime
    from backend.tf_import import import_segmentation_models

    (import_onnxruntime if kind == "onnx" else import_segmentation_models)()
    return kind


def _first_runtime() -> str:
    """``onnx`` when onnxruntime imports, else ``tensorflow`` (seconds to import, so tried second)."""
    from backend.onnx_runtime import import_onnxruntime
    from backend.tf_import import import_segmentation_models

    try:
        import_onnxruntime()
        return "onnx"
    except DependencyError:
        pass
    try:
        import_segmentation_models()
        return "tensorflow"
    except DependencyError:
        raise DependencyError(
            f"this Python ({sys.executable}) has neither onnxruntime nor TensorFlow with segmentation-models; "
            f"{INSTALL_HINT}"
        ) from None
