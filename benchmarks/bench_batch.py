"""Batch benchmark (issue 12): ``python -m backend batch`` on Dask against a plain loop of ``segment``.

Run ``make bench`` (or ``python benchmarks/bench_batch.py [--sheets N] [--size PX]``). Sheets are crops of
the demo orthophoto, mirrored to the requested size (real-looking content). The default model runs at its
``--precision auto`` choice. Measured, alternating, best of ``--repeats``:

(a) the loop: one process, the model loaded once, ``segment`` over every sheet one after the other
    (what a script would do; 2 inference threads);
(b) ``run_batch`` on a LocalCluster of 1 worker x 2 threads and of 2 workers x 1 thread, cluster start-up
    and each worker's model loading included; also the time from the first to the last finished item, which
    leaves out the fixed start-up and shows the steady-state throughput.

The batch's overhead is (b) against (a) with the same cores. Results: ``benchmarks/results/batch.md`` and
``batch.json``; the README turns the per-worker throughput into times for a county and a country.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results"
WORK = Path(os.environ.get("LANDCOVER_BENCH_DIR", "/tmp/landcover-bench")) / "batch"


def make_sheets(count: int, size: int) -> Path:
    """``count`` GeoTIFF sheets of ``size``² made of the demo orthophoto (a mirrored mosaic cut into pieces)."""
    import rasterio
    from bench_precision import demo_mosaic
    from rasterio.windows import Window

    folder = WORK / f"sheets_{count}_{size}"
    if folder.is_dir() and len(list(folder.glob("*.tif"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    per_side = 8192 // size
    mosaic = demo_mosaic(8192)
    with rasterio.open(mosaic) as src:
        for k in range(count):
            r, c = divmod(k % (per_side * per_side), per_side)
            window = Window(c * size, r * size, size, size)
            profile = {**src.profile, "width": size, "height": size, "transform": src.window_transform(window)}
            with rasterio.open(folder / f"sheet_{k:03d}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
    return folder


def loop(sheets: list[Path], out: Path) -> float:
    """Seconds for ``segment`` over every sheet in this process (model loaded and warmed up first)."""
    import numpy as np

    from backend.bundle import resolve_model
    from backend.inference import segment
    from backend.precision import choose_precision
    from backend.runtime import make_runtime

    os.environ["LANDCOVER_THREADS"] = "2"
    bundle = resolve_model(None)
    runtime = make_runtime(bundle.with_precision(choose_precision(bundle).precision), "auto")
    runtime.predict(np.zeros((8, 256, 256, 3), np.float32))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for sheet in sheets:
        segment(sheet, out / sheet.name, bundle, runtime=runtime)
    return time.perf_counter() - t0


def batch(folder: Path, out: Path, workers: int, threads: int) -> dict:
    from backend.batch import Manifest, run_batch
    from backend.contract import BatchArgs

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = run_batch(BatchArgs((str(folder),), out, workers=workers, threads_per_worker=threads))
    total = time.perf_counter() - t0
    assert not result.failed, result.failed
    stamps = sorted(os.path.getmtime(r["output"]) for r in Manifest(out / "manifest.jsonl").records().values())
    return {"seconds": total, "first_to_last_s": stamps[-1] - stamps[0], "items": result.items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sheets", type=int, default=16)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from backend.precision import fast_int8

    folder = make_sheets(args.sheets, args.size)
    sheets = sorted(folder.glob("*.tif"))
    pixels = args.sheets * args.size * args.size
    times: dict[str, list] = {"loop": [], "1x2": [], "2x1": []}
    for _ in range(args.repeats):
        times["loop"].append(loop(sheets, WORK / "out_loop"))
        times["1x2"].append(batch(folder, WORK / "out_1x2", 1, 2))
        times["2x1"].append(batch(folder, WORK / "out_2x1", 2, 1))
    best_loop = min(times["loop"])
    rows = [{"run": "loop of segment (1 process, 2 threads)", "seconds": round(best_loop, 2),
             "mp_per_s": round(pixels / best_loop / 1e6, 3), "overhead_pct": 0.0, "steady_s": None}]
    for key, label in (("1x2", "batch, 1 worker x 2 threads"), ("2x1", "batch, 2 workers x 1 thread")):
        best = min(times[key], key=lambda r: r["seconds"])
        rows.append({"run": label, "seconds": round(best["seconds"], 2),
                     "mp_per_s": round(pixels / best["seconds"] / 1e6, 3),
                     "overhead_pct": round(100 * (best["seconds"] / best_loop - 1), 1),
                     "steady_s": round(best["first_to_last_s"], 2)})
    res = {"date": time.strftime("%Y-%m-%d"), "sheets": args.sheets, "size": args.size, "pixels": pixels,
           "cores": len(os.sched_getaffinity(0)), "int8": fast_int8(), "load": [round(v, 2) for v in os.getloadavg()],
           "rows": rows}
    lines = [f"{args.sheets} sheets of {args.size}² (demo orthophoto content, {pixels / 1e6:.0f} MP), default model "
             f"(INT8 via --precision auto: {res['int8'] or 'no VNNI, float'}), {res['cores']} cores, best of "
             f"{args.repeats}; {res['date']}.", "",
             "| run | seconds | MP/s | vs the loop | first to last item finished |", "|---|---|---|---|---|"]
    for r in rows:
        steady = f"{r['steady_s']} s" if r["steady_s"] is not None else ""
        lines.append(f"| {r['run']} | {r['seconds']} | {r['mp_per_s']} | {r['overhead_pct']:+.1f} % | {steady} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
