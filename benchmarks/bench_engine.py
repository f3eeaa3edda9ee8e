"""Engine benchmarks (issue 2): overhead vs raw predict, peak memory, seam agreement, the seed approach.

Run ``make bench`` (or ``python benchmarks/bench_engine.py [--quick]``). Models are random-initialised
(seed 0) so the figures need no trained bundle; results are printed and written to
``benchmarks/results/engine.md`` and ``engine.json``.

(a) throughput: ``segment`` end to end (read, predict, blend, write) vs ``model.predict`` alone on
    the same number of 256 px tiles, same batch size, model loaded and warmed up in both cases.
(b) peak RSS: each run in a fresh process under ``/usr/bin/time -v`` (maximum resident set size).
(c) seams: tiled output vs one single-pass prediction of the whole image (the network is fully
    convolutional), % identical class pixels at overlap 0 and at the default overlap.
(d) the seed notebook's approach: read everything, crop to a multiple of 256, patchify,
    predict, unpatchify, write; time and peak RSS on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
WORK = Path(os.environ.get("LANDCOVER_BENCH_DIR", "/tmp/landcover-bench"))
TILE = 256
BATCH = 8


def make_raster(path: Path, size: int, seed: int = 0) -> Path:
    """A size x size RGB GeoTIFF with smooth structure plus noise, written strip by strip."""
    import rasterio
    from rasterio.transform import from_origin

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:2180",
               "transform": from_origin(500000, 600000, 0.25, 0.25), "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate"}
    x = np.arange(size, dtype=np.float32)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y0 in range(0, size, 256):
            y = np.arange(y0, min(size, y0 + 256), dtype=np.float32)[:, None]
            base = 0.5 + 0.25 * np.sin(x / 37.0) * np.cos(y / 53.0) + 0.25 * np.sin((x + 2 * y) / 211.0)
            bands = []
            for b in range(3):
                noise = rng.normal(0, 0.05, base.shape)
                bands.append(np.clip((base * (0.7 + 0.15 * b) + noise) * 255, 0, 255).astype(np.uint8))
            dst.write(np.stack(bands), window=rasterio.windows.Window(0, y0, size, len(y)))
    os.replace(tmp, path)
    return path


def bundle_for(arch: str):
    from backend.bundle import untrained_bundle

    return untrained_bundle(f"untrained:{arch}:resnet18", seed=0)


# --- (a) throughput -------------------------------------------------------------------------------------


def throughput(arch: str, size: int) -> dict:
    from backend.inference import segment
    from backend.runtime import TensorFlowRuntime
    bundle = bundle_for(arch)
    src = make_raster(WORK / f"bench_{size}.tif", size)
    runtime = TensorFlowRuntime(bundle)
    runtime.predict(np.zeros((BATCH, TILE, TILE, 3), np.float32))  # trace + warm up
    t0 = time.perf_counter()
    result = segment(src, WORK / f"out_{arch}_{size}.tif", bundle, batch_size=BATCH, runtime=runtime)
    engine_s = time.perf_counter() - t0
    n = result.tiles_predicted
    tiles = np.random.default_rng(0).random((n, TILE, TILE, 3), dtype=np.float32)
    t0 = time.perf_counter()
    for i in range(0, n, BATCH):
        runtime.predict(tiles[i : i + BATCH])
    runtime_s = time.perf_counter() - t0
    runtime.model.predict(tiles[:BATCH], batch_size=BATCH, verbose=0)  # warm up predict's own function
    t0 = time.perf_counter()
    runtime.model.predict(tiles, batch_size=BATCH, verbose=0)
    raw_s = time.perf_counter() - t0
    return {
        "arch": arch, "size": size, "tiles": n, "overlap": bundle.overlap, "batch": BATCH,
        "engine_s": round(engine_s, 2), "raw_predict_s": round(raw_s, 2),
        "engine_ms_per_tile": round(1000 * engine_s / result.tiles_predicted, 1),
        "raw_ms_per_tile": round(1000 * raw_s / n, 1),
        "runtime_predict_s": round(runtime_s, 2),
        "overhead_pct": round(100 * (engine_s / raw_s - 1), 1),
        "engine_overhead_pct": round(100 * (engine_s / runtime_s - 1), 1),
        "mp_per_s": round(size * size / engine_s / 1e6, 3),
    }


# --- (c) seams ------------------------------------------------------------------------------------------


def demo_crop(size: int) -> Path:
    """The top-left ``size``² of the bundled demo orthophoto (real content for a trained model)."""
    import rasterio
    from rasterio.windows import Window

    path = WORK / f"demo_{size}.tif"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(REPO / "demo" / "orthophoto.tif") as ds:
            data = ds.read(window=Window(0, 0, size, size))
            profile = ds.profile
            profile.update(width=size, height=size, transform=ds.window_transform(Window(0, 0, size, size)),
                           compress="deflate", photometric="rgb")
        with rasterio.open(path, "w", **profile) as out:
            out.write(data)
    return path


def seams(arch: str, size: int, overlaps: list[int]) -> list[dict]:
    """Tiled vs single-pass agreement; ``arch`` "default" means the trained default bundle on demo content."""
    import rasterio

    from backend.bundle import resolve_model
    from backend.inference import segment
    from backend.models import build_model
    from backend.runtime import TensorFlowRuntime
    from backend.tf_import import import_tensorflow

    tf = import_tensorflow()
    if arch == "default":
        bundle, src = resolve_model("default"), demo_crop(size)
    else:
        bundle, src = bundle_for(arch), make_raster(WORK / f"bench_{size}.tif", size)
    runtime = TensorFlowRuntime(bundle)
    whole = build_model(bundle.architecture, bundle.backbone, bundle.num_classes)  # (None, None, 3) input
    whole.set_weights(runtime.model.get_weights())
    with rasterio.open(src) as ds:
        img = np.moveaxis(ds.read(), 0, -1)
    single = whole(bundle.preprocessing.apply(img[None]), training=False).numpy()[0].argmax(-1)
    del whole
    tf.keras.backend.clear_session()
    rows = []
    for overlap in overlaps:
        out = segment(src, WORK / f"seam_{arch}_{overlap}.tif", bundle, overlap=overlap, runtime=runtime)
        with rasterio.open(out.output) as ds:
            tiled = ds.read(1)
        rows.append({"arch": "trained default U-Net" if arch == "default" else f"{arch}-ResNet18 (random)",
                     "size": size, "overlap": overlap,
                     "identical_pct": round(100 * float((tiled == single).mean()), 2),
                     "tiles": out.tiles_predicted})
    return rows


# --- (b)/(d) memory: one configuration per fresh process --------------------------------------------------


def run_engine_once(size: int, arch: str) -> None:
    from backend.inference import segment

    src = make_raster(WORK / f"bench_{size}.tif", size)
    segment(src, WORK / f"rss_engine_{size}.tif", bundle_for(arch), batch_size=BATCH, runtime="tensorflow")


def run_seed_once(size: int, arch: str) -> None:
    """The seed notebook: whole image in RAM, crop, patchify 256, predict all, unpatchify, write."""
    import rasterio
    from patchify import patchify, unpatchify

    from backend.models import build_from_bundle

    src = make_raster(WORK / f"bench_{size}.tif", size)
    model = build_from_bundle(bundle_for(arch))
    with rasterio.open(src) as ds:
        img = np.moveaxis(ds.read(), 0, -1)
        profile = ds.profile
    h, w = (img.shape[0] // TILE) * TILE, (img.shape[1] // TILE) * TILE
    img = img[:h, :w]
    patches = patchify(img, (TILE, TILE, 3), step=TILE)
    nh, nw = patches.shape[:2]
    flat = patches.reshape(-1, TILE, TILE, 3).astype(np.float32) / 255.0
    probs = model.predict(flat, batch_size=BATCH, verbose=0)
    classes = probs.argmax(-1).astype(np.uint8).reshape(nh, nw, TILE, TILE)
    mosaic = unpatchify(classes, (h, w))
    profile.update(count=1, width=w, height=h, dtype="uint8")
    with rasterio.open(WORK / f"rss_seed_{size}.tif", "w", **profile) as dst:
        dst.write(mosaic, 1)


def measure(kind: str, size: int, arch: str) -> dict:
    make_raster(WORK / f"bench_{size}.tif", size)
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "_once", kind, str(size), arch]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - t0
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or not match:
        return {"kind": kind, "size": size, "arch": arch, "error": proc.stderr.strip().splitlines()[-1][:200]}
    return {"kind": kind, "size": size, "arch": arch, "seconds": round(seconds, 1),
            "peak_rss_mb": round(int(match.group(1)) / 1024)}


# --- report -----------------------------------------------------------------------------------------------


def markdown(res: dict) -> str:
    lines = [f"Machine: {os.cpu_count()} cores, {res['cpu']}; TensorFlow CPU, random-initialised models, "
             f"256 px tiles, batch {BATCH}. Date: {res['date']}.", ""]
    lines += ["**(a) Engine vs the network alone** (same tile count and batch, model warmed up). *network* = the "
              "engine's own traced call (`Runtime.predict`) on the tiles in memory; *model.predict* = Keras's "
              "`predict()`, which is slower per call", "",
              "| model | raster | tiles | engine s | network s | model.predict s | engine vs network |"
              " engine vs model.predict | MP/s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["throughput"]:
        lines.append(f"| {r['arch']}-ResNet18 | {r['size']}² | {r['tiles']} | {r['engine_s']} |"
                     f" {r['runtime_predict_s']} | {r['raw_predict_s']} | {r['engine_overhead_pct']:+.1f} % |"
                     f" {r['overhead_pct']:+.1f} % | {r['mp_per_s']} |")
    lines += ["", "**(b, d) Peak memory and time: this engine vs the seed (patchify whole image)**", "",
              "| raster | engine peak RSS | engine time | seed peak RSS | seed time |", "|---|---|---|---|---|"]
    by = {(m["kind"], m["size"]): m for m in res["memory"]}
    for size in sorted({m["size"] for m in res["memory"]}):
        e, s = by.get(("engine", size), {}), by.get(("seed", size), {})

        def cell(m, key, unit):
            return f"{m[key]} {unit}" if key in m else m.get("error", "not run")

        lines.append(f"| {size}² | {cell(e, 'peak_rss_mb', 'MB')} | {cell(e, 'seconds', 's')} |"
                     f" {cell(s, 'peak_rss_mb', 'MB')} | {cell(s, 'seconds', 's')} |")
    lines += ["", "**(c) Seam agreement** with one single-pass prediction of the whole image (the trained model on the "
              "demo orthophoto's top-left corner; random models on the synthetic benchmark raster)", "",
              "| model | raster | overlap | identical pixels |", "|---|---|---|---|"]
    for r in res["seams"]:
        lines.append(f"| {r['arch']} | {r['size']}² | {r['overlap']} px | {r['identical_pct']} % |")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_once":
        kind, size, arch = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        (run_engine_once if kind == "engine" else run_seed_once)(size, arch)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run of the benchmark)")
    args = parser.parse_args()
    from backend.tf_import import configure_environment

    configure_environment()
    mem_sizes = [512, 1024] if args.quick else [1024, 4096, 8192]
    seed_sizes = [512, 1024] if args.quick else [1024, 4096, 8192]
    res = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "throughput": [], "memory": [], "seams": []}
    size_a = 512 if args.quick else 2048
    for arch in ("Unet", "FPN"):
        res["throughput"].append(throughput(arch, size_a))
        print(json.dumps(res["throughput"][-1]), flush=True)
    seam_size = 512 if args.quick else 1024
    for arch in ("default", "Unet", "FPN"):
        if arch == "default" and not (REPO / "backend" / "bundles" / "default").is_dir():
            continue
        res["seams"] += seams(arch, seam_size, [0, 32, 64])
        print(json.dumps(res["seams"][-3:]), flush=True)
    for size in mem_sizes:
        res["memory"].append(measure("engine", size, "Unet"))
        print(json.dumps(res["memory"][-1]), flush=True)
    for size in seed_sizes:
        res["memory"].append(measure("seed", size, "Unet"))
        print(json.dumps(res["memory"][-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "engine_quick" if args.quick else "engine"
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
