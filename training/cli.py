"""``python -m training <step> ...``: one subcommand per pipeline step, plus ``run`` for all of them.

User errors (any :class:`~backend.errors.LandcoverError` kind, :class:`TrainingError` among them) print
one line and exit with the kind's code (2); anything else is a bug and exits 1 with a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backend.contract import PRECISIONS
from training.errors import LandcoverError, TrainingError
from training.heldout import BENCHMARK_STYLES, HELD_OUT_SEED
from training.quantize import QuantizeParams


def _p(path: str) -> Path:
    return Path(path).expanduser()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Land-cover training pipeline: synthetic data, patch, filter, split, train, evaluate, export, "
        "quantize.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("synthetic", help="write a synthetic LandCover.ai-like dataset (images/ + masks/)")
    p.add_argument("out", type=_p, metavar="OUTDIR")
    p.add_argument("--orthophotos", type=int, default=8, help="number of scenes (default 8)")
    p.add_argument("--size", type=int, default=2048, help="scene side in pixels (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--style", default="v1", help="how classes are painted: v1 (default), v2, v3, v4, v5, v6, mixed "
                   "(v1 and v2 alternate) or a comma list taken in turn, e.g. v1,v6 (training/synthetic_v6.py lists "
                   "v6's knobs)")

    p = sub.add_parser("fake-landcoverai", help="write a small fake LandCover.ai v1 download (exact official layout)",
                       description="Write OUTDIR/images/*.tif, OUTDIR/masks/*.tif (map-sheet names, EPSG:2180, "
                       "25 and 50 cm pixels) and the official split lists train.txt/val.txt/test.txt of 512 px "
                       "tiles NAME_k, with synthetic content.")
    p.add_argument("out", type=_p, metavar="OUTDIR")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--orthophotos", type=int, default=4, help="number of orthophotos, >= 2 (default 4)")
    p.add_argument("--size", type=int, default=1024,
                   help="base side in pixels; 25 cm orthophotos are PX..1.5*PX, 50 cm ones half that (default 1024)")

    p = sub.add_parser("check-data", help="validate a LandCover.ai v1 download (images/, masks/, split lists)",
                       description="Check pairs, sizes, georeferencing (EPSG:2180), bands, mask values 0..4, "
                       "pixel sizes and the official split lists; print a report. Exit 0 when usable (warnings "
                       "allowed), 2 when not.")
    p.add_argument("data", type=_p, metavar="DIR", help="the unpacked landcover.ai.v1 folder")

    p = sub.add_parser("patch", help="cut orthophotos and masks into patches (PNG) with an index.csv")
    p.add_argument("data", type=_p, metavar="DATA_DIR", help="folder with images/*.tif and masks/*.tif")
    p.add_argument("out", type=_p, metavar="PATCH_DIR")
    p.add_argument("--size", type=int, default=256, help="patch side in pixels (default 256)")
    p.add_argument("--stride", type=int, default=None, help="step between patches (default: the size, no overlap)")

    p = sub.add_parser("filter", help="keep patches with enough non-background pixels (writes kept.txt)")
    p.add_argument("patches", type=_p, metavar="PATCH_DIR")
    p.add_argument("--threshold", type=float, default=0.05, help="minimum non-background share, exclusive (0.05)")
    p.add_argument("--keep-background", type=float, default=0.0, help="fraction of the other patches kept anyway")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("split", help="split kept patches into train/val/eval lists")
    p.add_argument("patches", type=_p, metavar="PATCH_DIR")
    p.add_argument("--out", type=_p, default=None, help="folder for the lists (default PATCH_DIR/../split)")
    p.add_argument("--kept", type=_p, default=None, help="list of patches to split (default PATCH_DIR/kept.txt)")
    p.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.2, 0.1), metavar=("TRAIN", "VAL", "EVAL"))
    p.add_argument("--random", action="store_true", help="patch-level random split (the seed's), not grouped")
    p.add_argument("--official", type=_p, default=None, metavar="DATA_DIR",
                   help="LandCover.ai's own train/val/test lists in DATA_DIR (the patches' source); give the patch "
                   "settings the patches were cut with: --patch-size, --stride, --gsd")
    p.add_argument("--patch-size", type=int, default=256, help="with --official: patch size (256)")
    p.add_argument("--stride", type=int, default=None, help="with --official: patch stride (default: the size)")
    p.add_argument("--gsd", type=float, default=None, help="with --official: patch.gsd_m the patches were cut at")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train a model on a split")
    p.add_argument("patches", type=_p, metavar="PATCH_DIR")
    p.add_argument("split", type=_p, metavar="SPLIT_DIR")
    p.add_argument("out", type=_p, metavar="MODEL_DIR")
    p.add_argument("--config", type=_p, default=None, help="YAML config; its 'train' section is used")
    p.add_argument("--architecture", choices=("Unet", "FPN", "Linknet"))
    p.add_argument("--backbone", help="segmentation-models backbone, e.g. resnet18, resnet50")
    p.add_argument("--encoder-weights", help="local encoder .h5 file (no downloads here); default none")
    p.add_argument("--init-weights", help="start from this trained model (bundle JSON or weights .h5) to fine-tune")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--crop", type=int, help="train on random crops of this side")
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR's last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. train.seed=1")

    p = sub.add_parser("evaluate", help="per-class metrics on the eval split and on held-out orthophotos")
    p.add_argument("model", type=_p, metavar="MODEL_DIR")
    p.add_argument("patches", type=_p, metavar="PATCH_DIR")
    p.add_argument("split", type=_p, metavar="SPLIT_DIR")
    p.add_argument("--data", type=_p, default=None, help="orthophoto folder, for the whole-orthophoto evaluation")
    p.add_argument("--out", type=_p, default=None, help="report folder (default MODEL_DIR/../eval)")
    p.add_argument("--examples", type=int, default=6)
    p.add_argument("--max-orthophotos", type=int, default=None)

    p = sub.add_parser("export", help="write a backend model bundle (JSON + float16 weights)")
    p.add_argument("model", type=_p, metavar="MODEL_DIR")
    p.add_argument("out", type=_p, metavar="BUNDLE_JSON")
    p.add_argument("--report", type=_p, default=None, help="evaluation report.json whose metrics go in the bundle")
    p.add_argument("--name", default="landcover-unet-resnet18-synthetic")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--gsd", type=float, default=0.25, help="metres per pixel the model was trained for")
    p.add_argument("--data-note", default=None, help="what the model was trained on (provenance 'data')")
    p.add_argument("--onnx", action="store_true", help="also write the ONNX export (backend export-onnx)")
    p.add_argument("--deepness", action="store_true", help="with --onnx: the Deepness plugin's layout")

    p = sub.add_parser("sanity", help="check a model against what real scenes certainly show and do not show",
                       description="Segment each real raster of the expectations file as a user would (--resample) "
                       "and check that certainly absent classes cover < 2 % and certainly present ones >= 0.5 % of "
                       "the valid pixels. Exit 1 when a scene fails; the table shows every share.")
    _model_check_args(p)
    p.add_argument("--expectations", type=_p, default=Path("tests/data/real/expectations.json"),
                   help="JSON list of scenes (default tests/data/real/expectations.json)")
    p.add_argument("--figures", type=_p, default=None, metavar="DIR",
                   help="also write DIR/<scene>.png: each scene as the model saw it beside its classes")

    p = sub.add_parser("heldout", help="score a model on fresh synthetic scenes of each style",
                       description="Paint new synthetic scenes (a seed no training run uses), the same number per "
                       "style, segment them through the backend and report mIoU, accuracy and per-class IoU per "
                       "style.")
    _model_check_args(p)
    p.add_argument("--scenes", type=int, default=8, help="scenes per style (default 8)")
    p.add_argument("--size", type=int, default=1024, help="scene side in pixels (default 1024)")
    p.add_argument("--styles", nargs="+", default=list(BENCHMARK_STYLES),
                   help=f"styles to paint (default {' '.join(BENCHMARK_STYLES)})")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help=f"scene seed (default {HELD_OUT_SEED})")

    p = sub.add_parser("average", help="average the weights of bundles of one network (fine-tunings from one start)",
                       description="Write a bundle whose weights are the weighted mean of the given bundles' weights: "
                       "a fine-tuning interpolated with its start (WiSE-FT), or several fine-tunings averaged (a "
                       "model soup). The bundles must be one network; the metadata is the first one's.")
    p.add_argument("out", type=_p, metavar="OUT_JSON")
    p.add_argument("models", nargs="+", metavar="BUNDLE[=WEIGHT]",
                   help="bundle .json files, each with an optional share (default 1; shares are normalised)")
    p.add_argument("--name", default=None, help="the new bundle's name (default: the first one's + '-average')")
    p.add_argument("--no-onnx", action="store_true", help="skip the float ONNX export")

    p = sub.add_parser("quantize", help="static INT8 quantization of a bundle's ONNX export (BUNDLE.int8.onnx)",
                       description="Quantize the bundle's float ONNX export to INT8 (calibrated on its training "
                       "patches), check it against the float model on held-out orthophotos, and record the INT8 file "
                       "as the bundle JSON's \"onnx_int8\" entry. The float export stays.")
    p.add_argument("--bundle", type=_p, required=True, metavar="BUNDLE_JSON", help="e.g. backend/bundles/default/"
                   "landcover.json (its \"onnx\" entry must be a float export)")
    p.add_argument("--calibration-tiles", type=int, default=None, metavar="N",
                   help="training patches used (default: the whole train split, at most 512)")
    p.add_argument("--out", type=_p, default=None, metavar="FILE",
                   help="INT8 file, in the bundle's folder (default: <stem>.int8.onnx beside the JSON)")
    p.add_argument("--activations", choices=("uint8", "int8"), default="uint8",
                   help="activation type (uint8: native on VNNI and ARM dot-product CPUs)")
    p.add_argument("--symmetric-activations", action="store_true", help="symmetric activation ranges")
    q = QuantizeParams()
    p.add_argument("--held-out", type=int, default=q.held_out_scenes, metavar="N",
                   help=f"new synthetic scenes (another seed) to check agreement on ({q.held_out_scenes})")
    p.add_argument("--held-out-size", type=int, default=q.held_out_size, metavar="PX",
                   help=f"their side in pixels ({q.held_out_size})")
    p.add_argument("--min-agreement", type=float, default=q.min_agreement, metavar="F",
                   help="refuse the result when a checked orthophoto keeps fewer equal classes where the float model "
                   f"is decided ({q.min_agreement})")
    p.add_argument("--decided", type=float, default=q.decided, metavar="P",
                   help="the agreement counts pixels whose float top-class probability is >= P: below, the float "
                   f"class is near a tie ({q.decided}; 0: every pixel)")
    p.add_argument("--evaluate", nargs="+", action="append", default=[], metavar=("IMAGE", "TRUTH"),
                   help="also compare on this orthophoto, scored against TRUTH when given (repeatable)")
    p.add_argument("--latency-runs", type=int, default=7, metavar="N", help="timed batches per model (7; 0: skip)")
    p.add_argument("--report", type=_p, default=None, metavar="JSON", help="also write every measurement here")
    p.error = _one_line_error(p)  # type: ignore[method-assign]

    p = sub.add_parser("run", help="run every step from a YAML config")
    p.add_argument("--config", type=_p, required=True, help="e.g. training/configs/default.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--workdir", default=None, help="override the config's workdir")
    p.add_argument("--resume", action="store_true", help="skip data steps and continue training from the checkpoint")
    p.add_argument("--from", dest="start", default=None,
                   help="first step to run (default: the first; 'evaluate' re-evaluates and re-exports a finished run)")
    p.add_argument("--until", default="export", help="last step to run (synthetic, patch, filter, split, train, "
                   "evaluate, export)")
    return parser


def _one_line_error(parser: argparse.ArgumentParser) -> Any:
    """An ``error`` for ``parser`` that prints one line (not the usage block) and exits 2."""

    def error(message: str) -> None:
        print(f"error: {message}; see '{parser.prog} --help'", file=sys.stderr)
        sys.exit(2)

    return error


def _model_check_args(p: argparse.ArgumentParser) -> None:
    """The options of the commands that check a model: which model, which export, where the table goes."""
    p.add_argument("--model", default=None, help="bundle .json or model name (default: the bundled default)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="which export runs, as in segment --precision (default auto)")
    p.add_argument("--report", type=_p, default=None, help="also write the Markdown table here")


def _train_overrides(args: argparse.Namespace) -> list[str]:
    flags = {
        "architecture": args.architecture,
        "backbone": args.backbone,
        "encoder_weights": args.encoder_weights,
        "init_weights": args.init_weights,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "steps_per_epoch": args.steps_per_epoch,
        "augment.crop": args.crop,
    }
    return [f"train.{k}={v}" for k, v in flags.items() if v is not None] + list(args.set)


def run_command(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "synthetic":
        from training.synthetic import SyntheticParams, generate_dataset

        params = SyntheticParams(orthophotos=args.orthophotos, size=args.size, seed=args.seed, style=args.style)
        names = generate_dataset(args.out, params, progress=lambda i, n: print(f"scene {i}/{n}", flush=True))
        print(f"wrote {len(names)} orthophoto(s) to {args.out}/images and masks to {args.out}/masks")
    elif cmd == "fake-landcoverai":
        from training.fake_landcoverai import FakeParams, generate_fake_landcoverai

        lists = generate_fake_landcoverai(args.out, FakeParams(args.orthophotos, args.size, args.seed),
                                          progress=lambda i, n, name: print(f"{i}/{n} {name}", flush=True))
        print(f"wrote {args.orthophotos} orthophoto(s) to {args.out}/images and masks to {args.out}/masks; "
              + ", ".join(f"{k}.txt {len(v)} tiles" for k, v in lists.items()))
    elif cmd == "check-data":
        from training.check_data import check_data

        report = check_data(args.data)
        print(report.format(), flush=True)
        if not report.ok:
            raise TrainingError(report.summary())
    elif cmd == "patch":
        from training.patch import PatchParams, patch_dataset

        s = patch_dataset(args.data, args.out, PatchParams(args.size, args.stride),
                          progress=lambda i, n, name: print(f"{i}/{n} {name}", flush=True))
        print(f"wrote {s.patches} patches from {s.orthophotos} orthophoto(s) to {args.out}")
    elif cmd == "filter":
        from training.filter import FilterParams, filter_patches, format_report

        report = filter_patches(args.patches, FilterParams(args.threshold, args.keep_background, args.seed))
        print(format_report(report))
        print(f"kept list: {args.patches / 'kept.txt'}")
    elif cmd == "split":
        from training.patch import PatchParams
        from training.split import SplitParams, split_patches

        if args.official and args.random:
            raise TrainingError("--official and --random are two different splits; choose one")
        mode = "official" if args.official else "random" if args.random else "grouped"
        params = SplitParams(*args.fractions, mode=mode, seed=args.seed)
        out = args.out or args.patches.parent / "split"
        info = split_patches(args.patches, params, out, kept=args.kept, data_dir=args.official,
                             patch=PatchParams(args.patch_size, args.stride, args.gsd))
        print(", ".join(f"{k}: {v} patches" for k, v in info["counts"].items()) + f"; lists in {out}")
    elif cmd == "train":
        from training.config import apply_overrides, build_config, load_yaml, to_dict
        from training.train import train

        config = build_config(apply_overrides(load_yaml(args.config), _train_overrides(args)))
        result = train(args.patches, args.split, args.out, config.train, resume=args.resume,
                       config=to_dict(config))
        print(f"best val mIoU {result.best_miou:.4f} at epoch {result.best_epoch}; weights {result.best_weights}")
    elif cmd == "evaluate":
        from training.config import EvaluateParams
        from training.evaluate import evaluate

        out = args.out or args.model.parent / "eval"
        params = EvaluateParams(examples=args.examples, max_orthophotos=args.max_orthophotos)
        report = evaluate(args.model, args.patches, args.split, out, params, data_dir=args.data, progress=print)
        for scope in ("patches", "orthophotos"):
            if scope in report:
                print(f"{scope}: mIoU {report[scope]['miou']:.4f}, accuracy {report[scope]['accuracy']:.4f}")
        print(f"reports in {out} (report.md, report.json, metrics.csv)")
    elif cmd == "export":
        from training.export import SYNTHETIC_DATA, ExportParams, export_bundle

        report = _read_json(args.report) if args.report else None
        params = ExportParams(name=args.name, tile_size=args.tile_size, gsd_m=args.gsd,
                              data=args.data_note or SYNTHETIC_DATA, onnx=args.onnx or args.deepness,
                              deepness=args.deepness)
        out = export_bundle(args.model, args.out, params, report=report)
        print(f"wrote bundle {out}")
    elif cmd == "sanity":
        from backend.bundle import resolve_model
        from training.sanity import report, run_suite

        bundle = resolve_model(args.model)
        results = run_suite(bundle, args.expectations, precision=args.precision, figures=args.figures)
        text = report(results, f"{bundle.name}, precision {args.precision}")
        print(text)
        if args.report:
            args.report.write_text(text)
        if not all(r.passed for r in results):
            return 1
    elif cmd == "heldout":
        from backend.contract import resolve_model as resolve_model_info
        from training.heldout import HeldOutParams, held_out_benchmark, markdown

        params = HeldOutParams(scenes=args.scenes, size=args.size, seed=args.seed, styles=tuple(args.styles))
        bundle_json = resolve_model_info(args.model).source
        if bundle_json is None:
            raise TrainingError(f"{args.model} is an untrained network; pass a trained bundle .json")
        text = markdown(held_out_benchmark(bundle_json, params, args.precision, say=lambda m: print(m, flush=True)))
        print(text)
        if args.report:
            args.report.write_text(text)
    elif cmd == "average":
        from training.average import Ingredient, average_bundles

        ingredients = [Ingredient.parse(m) for m in args.models]
        out = average_bundles(ingredients, args.out, name=args.name, onnx=not args.no_onnx)
        print(f"wrote bundle {out} (" + ", ".join(f"{i.bundle} x {i.weight:g}" for i in ingredients) + ")")
    elif cmd == "quantize":
        _quantize(args)
    elif cmd == "run":
        from training.config import load_config
        from training.pipeline import STEPS, run_pipeline

        for flag, value in (("--from", args.start), ("--until", args.until)):
            if value is not None and value not in STEPS:
                raise TrainingError(f"{flag} must be one of {', '.join(STEPS)}, got {value!r}")
        overrides = list(args.set) + ([f"workdir={args.workdir}"] if args.workdir else [])
        config = load_config(args.config, overrides)
        command = "python -m training run --config " + " ".join([str(args.config), *(f"--set {o}" for o in overrides)])
        run_pipeline(config, resume=args.resume, say=lambda m: print(m, flush=True), until=args.until,
                     start=args.start, command=command)
    return 0


def _quantize(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from training.quantize import EvalImage, QuantizeParams, quantize_bundle, tile_latency_ms

    params = QuantizeParams(calibration_tiles=args.calibration_tiles, activations=args.activations,
                            symmetric_activations=args.symmetric_activations, held_out_scenes=args.held_out,
                            held_out_size=args.held_out_size, min_agreement=args.min_agreement,
                            decided=args.decided)
    if any(len(item) > 2 for item in args.evaluate):
        raise TrainingError("--evaluate takes IMAGE and optionally TRUTH; repeat --evaluate for more orthophotos")
    if args.latency_runs < 0:
        raise TrainingError(f"--latency-runs must be >= 0, got {args.latency_runs}")
    if args.report and not args.report.parent.is_dir():
        raise TrainingError(f"--report {args.report}: folder {args.report.parent} does not exist")
    evaluate = [EvalImage(_p(item[0]), _p(item[1]) if len(item) > 1 else None, name=item[0]) for item in args.evaluate]
    report = quantize_bundle(args.bundle, params, out=args.out, evaluate=evaluate,
                             say=lambda m: print(m, flush=True))
    if args.latency_runs:
        from backend.bundle import load_bundle

        bundle = load_bundle(args.bundle)
        report.latency_ms = tile_latency_ms(bundle, {"fp32": report.fp32_path, "int8": report.path},
                                            batch=bundle.default_batch_size, runs=args.latency_runs)
    print(report.summary())
    if args.report:
        data = {"provenance": report.provenance, "latency_ms_per_tile": report.latency_ms,
                "comparisons": [asdict(c) for c in report.comparisons]}
        args.report.write_text(json.dumps(data, indent=2) + "\n")
        print(f"measurements in {args.report}")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise TrainingError(f"{path} does not exist; run 'python -m training evaluate' first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TrainingError(f"{path} is not valid JSON ({exc})") from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except LandcoverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
