"""Precision, IO overlap and test-time augmentation benchmark (issue 13), side by side in one run.

Run ``make bench`` (or ``python benchmarks/bench_precision.py [--quick]``). Results are printed and
written to ``benchmarks/results/precision.md`` and ``precision.json``.

Models: the shipped default bundle (U-Net-ResNet18, trained on synthetic scenes, float and INT8 exports)
and FPN-ResNet18 with random weights (seed 0; its INT8 export is calibrated here on 64 tiles of the demo
orthophoto; random weights say nothing about accuracy, only about speed).

(a) ms per 256² tile: ``Runtime.predict`` alone, batch 8, fp32 and INT8 alternating call by call, median.
(b) end to end: ``segment`` on 2048² and 8192² GeoTIFFs made of the demo orthophoto (mirrored to fill
    8192²), fp32 and INT8 alternating, best of
    ``--repeats``; MP/s, speedup, and the share of pixels whose class is the same in both outputs.
(c) engine overhead: the same run with the serial engine (``overlap_io=False``) and with the reader and
    writer threads, against the bare network on the same number of tiles (U-Net, fp32 and INT8).
(d) quality: mIoU against the truth masks for fp32 / INT8 x TTA none / flip / d4 on the demo
    orthophoto and on held-out synthetic scenes (seed 7919, never trained or calibrated on), with the
    time each variant took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results"
WORK = Path(os.environ.get("LANDCOVER_BENCH_DIR", "/tmp/landcover-bench"))
TILE, BATCH = 256, 8
DEFAULT_JSON = REPO / "backend" / "bundles" / "default" / "landcover.json"
DEMO, TRUTH = REPO / "demo" / "orthophoto.tif", REPO / "demo" / "truth.tif"


def say(message: str) -> None:
    print(message, flush=True)


def fpn_bundle():
    """Random-weights FPN-ResNet18 with a float export (bench_runtimes) and an INT8 export calibrated on the demo."""
    from bench_runtimes import make_bundle

    from backend.bundle import load_bundle
    from backend.quantize import QuantSettings, quantize_from_rasters

    json_path = make_bundle("FPN", deepness=True)
    bundle = load_bundle(json_path)
    if bundle.onnx_int8 is None or not bundle.onnx_int8.file.is_file():
        # A random network has no margin between its class scores, so its agreement is reported, not required.
        report = quantize_from_rasters(bundle, [DEMO], 64, QuantSettings(min_agreement=0.01))
        say(report.summary())
        bundle = load_bundle(json_path)
    return bundle


def runtimes_for(bundle) -> dict:
    from backend.onnx_runtime import OnnxRuntime

    out = {}
    for precision in ("fp32", "int8"):
        runtime = OnnxRuntime(bundle.with_precision(precision))
        runtime.predict(np.zeros((BATCH, TILE, TILE, 3), np.float32))  # optimise + warm up
        out[precision] = runtime
    return out


def per_tile(runtimes: dict, runs: int) -> dict:
    """Median ms per tile of each runtime, batch 8, alternating call by call."""
    x = np.random.default_rng(0).random((BATCH, TILE, TILE, 3), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in runtimes}
    for _ in range(runs):
        for key, runtime in runtimes.items():
            t0 = time.perf_counter()
            runtime.predict(x)
            times[key].append(time.perf_counter() - t0)
    return {k: round(1000 * float(np.median(v)) / BATCH, 2) for k, v in times.items()}


def demo_mosaic(size: int) -> Path:
    """A ``size``² GeoTIFF of real-looking content: the demo orthophoto, mirrored tile by tile as needed.

    Agreement between fp32 and INT8 is only meaningful on images like those the model maps; the engine
    benchmark's sine-and-noise raster is far outside them (the trained model's scores are close there).
    """
    import rasterio
    from rasterio.windows import Window

    path = WORK / f"demo_mosaic_{size}.tif"
    if path.exists():
        return path
    with rasterio.open(DEMO) as src:
        demo, profile = src.read(), src.profile
    h, w = demo.shape[1:]
    profile.update(width=size, height=size, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    profile.pop("photometric", None)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for i in range(-(-size // h)):
            strip = np.concatenate([demo[:, :, ::-1] if j % 2 else demo for j in range(-(-size // w))], axis=2)
            strip = strip[:, ::-1] if i % 2 else strip
            rows = min(h, size - i * h)
            dst.write(strip[:, :rows, :size], window=Window(0, i * h, size, rows))
    os.replace(tmp, path)
    return path


def read_classes(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


def end_to_end(name: str, bundle, runtimes: dict, src: Path, size: int, repeats: int) -> list[dict]:
    """fp32 and INT8 ``segment`` on ``src`` (reader/writer threads on), alternating; best of ``repeats``."""
    from backend.inference import segment

    times: dict[str, list[float]] = {k: [] for k in runtimes}
    outs = {k: WORK / f"prec_{name}_{size}_{k}.tif" for k in runtimes}
    tiles = 0
    for _ in range(repeats):
        for key, runtime in runtimes.items():
            t0 = time.perf_counter()
            result = segment(src, outs[key], bundle, batch_size=BATCH, runtime=runtime)
            times[key].append(time.perf_counter() - t0)
            tiles = result.tiles_predicted
    a, b = read_classes(outs["fp32"]), read_classes(outs["int8"])
    agreement = float((a == b).mean())
    best = {k: min(v) for k, v in times.items()}
    return [{"model": name, "size": size, "precision": k, "tiles": tiles, "seconds": round(best[k], 2),
             "ms_per_tile": round(1000 * best[k] / tiles, 1), "mp_per_s": round(size * size / best[k] / 1e6, 3),
             "speedup": round(best["fp32"] / best[k], 2),
             "agreement_with_fp32": round(agreement, 5) if k == "int8" else None} for k in runtimes]


def overhead(bundle, runtimes: dict, src: Path, size: int, repeats: int) -> list[dict]:
    """Serial engine vs reader/writer threads vs the bare network on the same tile count (alternating)."""
    from backend.inference import segment

    rows = []
    for key, runtime in runtimes.items():
        times: dict[str, list[float]] = {"serial": [], "threads": [], "network": []}
        tiles = 0
        for _ in range(repeats):
            for mode in ("serial", "threads"):
                t0 = time.perf_counter()
                result = segment(src, WORK / f"ovl_{key}_{mode}.tif", bundle, batch_size=BATCH, runtime=runtime,
                                 overlap_io=mode == "threads")
                times[mode].append(time.perf_counter() - t0)
                tiles = result.tiles_predicted
            x = np.random.default_rng(1).random((BATCH, TILE, TILE, 3), dtype=np.float32)
            t0 = time.perf_counter()
            for i in range(0, tiles, BATCH):
                runtime.predict(x[: min(BATCH, tiles - i)])
            times["network"].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        same = bool((read_classes(WORK / f"ovl_{key}_serial.tif") == read_classes(WORK / f"ovl_{key}_threads.tif"))
                    .all())
        rows.append({"precision": key, "size": size, "tiles": tiles, "network_s": round(best["network"], 2),
                     "serial_s": round(best["serial"], 2), "threads_s": round(best["threads"], 2),
                     "serial_overhead_pct": round(100 * (best["serial"] / best["network"] - 1), 1),
                     "threads_overhead_pct": round(100 * (best["threads"] / best["network"] - 1), 1),
                     "identical_output": same})
    return rows


def quality(bundle, images: list[tuple[str, Path, Path]], modes: tuple[str, ...]) -> list[dict]:
    """mIoU and seconds for every precision x TTA mode on every image."""
    from backend.inference import segment
    from training.metrics import confusion_matrix, scores

    names = bundle.class_names
    rows = []
    runtimes = runtimes_for(bundle)
    for label, image, truth in images:
        truth_classes = read_classes(truth)
        for precision, runtime in runtimes.items():
            for tta in modes:
                out = WORK / f"q_{label}_{precision}_{tta}.tif"
                t0 = time.perf_counter()
                segment(image, out, bundle, runtime=runtime, tta=tta)
                seconds = time.perf_counter() - t0
                s = scores(confusion_matrix(truth_classes, read_classes(out), len(names)), names)
                rows.append({"image": label, "precision": precision, "tta": tta, "miou": round(s["miou"], 4),
                             "accuracy": round(s["accuracy"], 4), "seconds": round(seconds, 2)})
                say(f"  {label} {precision} tta={tta}: mIoU {s['miou']:.4f} ({seconds:.1f} s)")
    return rows


def held_out(count: int, size: int) -> list[tuple[str, Path, Path]]:
    """New synthetic scenes (seed 7919) with their masks, written once under WORK."""
    from backend.bundle import load_bundle
    from training.quantize import QuantizeParams, held_out_scenes

    folder = WORK / f"heldout_{count}_{size}"
    if len(list((folder / "images").glob("*.tif"))) != count:
        held_out_scenes(load_bundle(DEFAULT_JSON), QuantizeParams(held_out_scenes=count, held_out_size=size), folder)
    return [(p.stem, p, folder / "masks" / p.name) for p in sorted((folder / "images").glob("*.tif"))]


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, INT8 instructions: {m['int8_feature'] or 'none'}; onnxruntime "
        f"{m['onnxruntime']}; load average at start {m['load']}; {res['date']}. 256 px tiles, overlap 32 px, batch 8.",
        "",
        "**(a) Network alone**, ms per 256² tile (median, fp32 and INT8 alternating call by call)",
        "",
        "| model | fp32 | INT8 | speedup |",
        "|---|---|---|---|",
    ]
    for name, t in res["per_tile"].items():
        lines.append(f"| {name} | {t['fp32']} | {t['int8']} | {t['fp32'] / t['int8']:.2f}x |")
    lines += ["", "**(b) `segment` end to end** on the demo orthophoto (2048²) and a mirrored 4 x 4 mosaic of it "
              "(8192²): read, predict, blend, write; reader/writer threads on; best of "
              f"{res['repeats']}, fp32 and INT8 alternating)", "",
              "| model | raster | tiles | precision | seconds | ms/tile | MP/s | speedup | same class as fp32 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["end_to_end"]:
        agree = f"{100 * r['agreement_with_fp32']:.3f} %" if r["agreement_with_fp32"] is not None else ""
        lines.append(f"| {r['model']} | {r['size']}² | {r['tiles']} | {r['precision']} | {r['seconds']} | "
                     f"{r['ms_per_tile']} | {r['mp_per_s']} | {r['speedup']:.2f}x | {agree} |")
    lines += ["", "**(c) Engine overhead over the bare network** (U-Net-ResNet18, same tile count; best of "
              f"{res['repeats']}, alternating)", "",
              "| precision | raster | tiles | network s | serial engine s | overhead | with reader/writer threads s | "
              "overhead | identical output |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["overhead"]:
        lines.append(f"| {r['precision']} | {r['size']}² | {r['tiles']} | {r['network_s']} | {r['serial_s']} | "
                     f"{r['serial_overhead_pct']:+.1f} % | {r['threads_s']} | {r['threads_overhead_pct']:+.1f} % | "
                     f"{'yes' if r['identical_output'] else 'NO'} |")
    lines += ["", "**(d) Quality** of the default model: mIoU against the truth masks (seconds per run in brackets)",
              "", "| image | fp32 | fp32 + flip | fp32 + d4 | INT8 | INT8 + flip | INT8 + d4 |",
              "|---|---|---|---|---|---|---|"]
    by_image: dict[str, dict] = {}
    for r in res["quality"]:
        by_image.setdefault(r["image"], {})[(r["precision"], r["tta"])] = r
    for image, cells in by_image.items():
        row = [f"{cells[k]['miou']:.4f} ({cells[k]['seconds']} s)" if k in cells else "" for k in
               (("fp32", "none"), ("fp32", "flip"), ("fp32", "d4"), ("int8", "none"), ("int8", "flip"),
                ("int8", "d4"))]
        lines.append(f"| {image} | " + " | ".join(row) + " |")
    mean = res["quality_mean"]
    lines.append("| **mean** | " + " | ".join(f"**{mean[k]:.4f}**" if k in mean else "" for k in
                                              ("fp32/none", "fp32/flip", "fp32/d4", "int8/none", "int8/flip",
                                               "int8/d4")) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2048² only, 1 repeat, 1 held-out scene, no d4")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    from backend.bundle import load_bundle
    from backend.precision import fast_int8

    repeats = 1 if args.quick else args.repeats
    sizes = (2048,) if args.quick else (2048, 8192)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    res: dict = {"date": time.strftime("%Y-%m-%d"), "repeats": repeats, "machine": {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "int8_feature": fast_int8(),
        "onnxruntime": onnxruntime.__version__, "load": [round(v, 2) for v in os.getloadavg()]}}
    unet = load_bundle(DEFAULT_JSON)
    fpn = fpn_bundle()
    models = {"U-Net-ResNet18 (default, trained)": (unet, runtimes_for(unet)),
              "FPN-ResNet18 (random weights)": (fpn, runtimes_for(fpn))}
    say("(a) network alone")
    res["per_tile"] = {name: per_tile(rt, 15 if not args.quick else 5) for name, (_, rt) in models.items()}
    say(json.dumps(res["per_tile"]))
    res["end_to_end"], res["overhead"] = [], []
    for size in sizes:
        src = demo_mosaic(size)
        for name, (bundle, rt) in models.items():
            say(f"(b) {name} {size}²")
            res["end_to_end"] += end_to_end(name.split(" ")[0], bundle, rt, src, size, repeats)
        say(f"(c) overhead {size}²")
        res["overhead"] += overhead(unet, models["U-Net-ResNet18 (default, trained)"][1], src, size, repeats)
    say("(d) quality")
    images = [("demo", DEMO, TRUTH), *held_out(1 if args.quick else 2, 2048)]
    modes = ("none", "flip") if args.quick else ("none", "flip", "d4")
    res["quality"] = quality(unet, images, modes)
    res["quality_mean"] = {}
    for precision in ("fp32", "int8"):
        for tta in modes:
            vals = [r["miou"] for r in res["quality"] if r["precision"] == precision and r["tta"] == tta]
            res["quality_mean"][f"{precision}/{tta}"] = round(float(np.mean(vals)), 4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(res)
    (RESULTS / "precision.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
