"""Run every step from one config: (synthetic) -> patch -> filter -> split -> train -> evaluate -> export.

Work folder layout (``workdir``): ``data/`` (synthetic orthophotos, unless ``data.dir`` is given),
``patches/`` (with ``kept.txt``, ``filter_report.json``), ``split/``, ``model/``, ``eval/``; the
bundle goes to ``export.out`` (default ``WORKDIR/bundle/landcover.json``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from backend.contract import write_text_atomic
from backend.outputs import remove_stale_temps
from training.config import PipelineConfig, to_dict

STEPS = ("synthetic", "patch", "filter", "split", "train", "evaluate", "export")


def run_pipeline(
    config: PipelineConfig,
    resume: bool = False,
    say: Callable[[str], None] = print,
    until: str = "export",
    start: str | None = None,
    command: str = "python -m training run --config CONFIG",
) -> dict:
    """Run the steps up to ``until`` and return a small summary (paths, timings, headline metrics).

    ``start`` skips the steps before it (default: the first step, or ``train`` when resuming), e.g.
    ``start="evaluate"`` re-evaluates and re-exports a finished run. ``command`` is how the run was
    started, quoted in the model card.
    """
    from training.evaluate import evaluate
    from training.export import export_bundle, trained_gsd
    from training.filter import filter_patches, format_report
    from training.model_card import write_model_card
    from training.patch import patch_dataset
    from training.split import read_split, split_patches
    from training.synthetic import generate_dataset
    from training.train import read_train_json, train

    work = config.work
    work.mkdir(parents=True, exist_ok=True)
    removed = remove_killed_temps(work, config.bundle_json)
    if removed:
        say(f"[run] removed {len(removed)} unfinished file(s) of killed earlier runs")
    resolved = to_dict(config)
    import yaml

    write_text_atomic(work / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    patches, split_dir, model_dir, eval_dir = work / "patches", work / "split", work / "model", work / "eval"
    timings: dict[str, float] = {}
    summary: dict = {"workdir": str(work), "timings_s": timings}
    first = STEPS.index(start or ("train" if resume else STEPS[0]))
    last = STEPS.index(until)

    def step(name: str) -> bool:
        return first <= STEPS.index(name) <= last

    t = time.monotonic()
    if config.data.synthetic is not None and step("synthetic"):
        say(f"[synthetic] {config.data.synthetic.orthophotos} scene(s) of {config.data.synthetic.size} px -> "
            f"{config.data_dir}")
        generate_dataset(config.data_dir, config.data.synthetic)
        timings["synthetic"] = round(time.monotonic() - t, 1)
    if config.data.dir is not None and step("patch"):
        from training.check_data import require_usable

        data_report = require_usable(config.data_dir)  # a bad download stops here, with the first problem
        say(f"[check-data] {data_report.summary()}")
    if step("patch"):
        t = time.monotonic()
        s = patch_dataset(config.data_dir, patches, config.patch)
        say(f"[patch] {s.patches} patches of {config.patch.size} px from {s.orthophotos} orthophoto(s) -> {patches}")
        timings["patch"] = round(time.monotonic() - t, 1)
    if step("filter"):
        report = filter_patches(patches, config.filter)
        say("[filter] " + format_report(report).replace("\n", "\n         "))
    if step("split"):
        info = split_patches(patches, config.split, split_dir, data_dir=config.data_dir, patch=config.patch)
        say(f"[split] {info['params']['mode']}: " + ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
        if "official" in info:
            left = info["official"]["patches_left_out"]
            say(f"[split] official lists: {left['straddling']} patch(es) across tiles of two splits and "
                f"{left['unlisted']} reaching unlisted edge tiles left out; no patch leaks between splits")
    if step("train"):
        t = time.monotonic()
        say(f"[train] {config.train.architecture}/{config.train.backbone}, {config.train.epochs} epoch(s) -> "
            f"{model_dir}")
        result = train(patches, split_dir, model_dir, config.train, resume=resume, config=resolved)
        say(f"[train] best val mIoU {result.best_miou:.4f} at epoch {result.best_epoch} ({result.seconds:.0f} s)")
        timings["train"] = round(time.monotonic() - t, 1)
        summary["best_val_miou"] = result.best_miou
    report = None
    if step("evaluate"):
        t = time.monotonic()
        report = evaluate(model_dir, patches, split_dir, eval_dir, config.evaluate, data_dir=config.data_dir,
                          progress=lambda m: say(f"[evaluate] {m}"))
        for scope in ("patches", "orthophotos"):
            if scope in report:
                say(f"[evaluate] {scope}: mIoU {report[scope]['miou']:.4f}, accuracy {report[scope]['accuracy']:.4f}")
                summary[f"{scope}_miou"] = report[scope]["miou"]
        timings["evaluate"] = round(time.monotonic() - t, 1)
    if step("export"):
        if report is None and (eval_dir / "report.json").is_file():
            report = json.loads((eval_dir / "report.json").read_text())
        calibration = ([patches / "images" / f"{name}.png" for name in read_split(split_dir, "train")]
                       if config.export.params.int8 else [])
        params = config.export.params
        if params.gsd_m is None:  # the bundle declares the pixel size the model was trained at
            params = replace(params, gsd_m=trained_gsd(config.patch.gsd_m, config.data_dir))
        out = export_bundle(model_dir, config.bundle_json, params, report=report, config=resolved,
                            calibration=calibration, say=lambda m: say(f"[export] {m}"))
        say(f"[export] bundle {out}")
        summary["bundle"] = str(out)
        checks = _bundle_checks(out, config, say)
        if config.export.model_card:
            card = write_model_card(Path(config.export.model_card), out, report, read_train_json(model_dir), command,
                                    checks)
            say(f"[export] model card {card}")
    write_text_atomic(work / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def remove_killed_temps(work: Path, bundle_json: Path) -> list[Path]:
    """The hidden in-progress files (``.NAME.part-PID``) that killed runs left anywhere under the work folder, and
    those of the bundle's files (``STEM.*``) beside ``bundle_json``.

    A killed step leaves its half-written weights, ONNX export or report there, invisible and never reused; a
    process that still runs keeps its files. The work folder is the run's own, so every such name in it counts; the
    bundle may sit in a folder shared with other files, so there only the bundle's own names do."""
    removed: list[Path] = []
    if work.is_dir():
        for parent, _, _ in os.walk(work):
            removed += remove_stale_temps(Path(parent), owns=lambda _name: True)
    from training.export import bundle_stem

    bundle_dir, stem = bundle_json.parent, bundle_stem(bundle_json) + "."
    if bundle_dir.is_dir() and not bundle_dir.resolve().is_relative_to(work.resolve()):
        removed += remove_stale_temps(bundle_dir, owns=lambda name: name.startswith(stem))
    return removed


def _bundle_checks(bundle_json: Path, config: PipelineConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """The exported bundle on fresh synthetic scenes per style and on the real-scene sanity suite, if configured."""
    checks: dict[str, Any] = {}
    if config.evaluate.held_out_scenes:
        from training.heldout import HeldOutParams, held_out_benchmark

        checks["held_out"] = held_out_benchmark(bundle_json, HeldOutParams(scenes=config.evaluate.held_out_scenes),
                                                precision="fp32", say=lambda m: say(f"[export] held-out {m}"))
    if config.evaluate.sanity:
        from backend.bundle import load_bundle
        from training.sanity import run_suite

        results = run_suite(load_bundle(bundle_json), Path(config.evaluate.sanity), precision="fp32")
        say(f"[export] real-scene sanity suite: {sum(r.passed for r in results)} of {len(results)} scenes pass")
        checks["sanity"] = results
    return checks
