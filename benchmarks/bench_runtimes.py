"""Runtime benchmark (issue 5): ONNX Runtime vs TensorFlow, end to end, side by side in one run.

Run ``make bench`` (or ``python benchmarks/bench_runtimes.py [--size 2048] [--quick]``). For U-Net-ResNet18
and FPN-ResNet18 with random weights (seed 0, saved once as a float16 bundle like trained bundles, so
both runtimes run exactly the same weights), the script exports the bundle to ONNX and measures:

(a) end to end: ``segment`` on a synthetic size x size RGB GeoTIFF (read, predict, blend, write) with
    each runtime, model loaded and warmed up first, the runtimes alternating for ``--repeats`` rounds
    (best round reported, so a burst of load from another process does not decide the comparison);
    megapixels per second, ms per tile, speedup;
(a') the command an analyst (or the QGIS plugin's worker) runs: ``python -m backend segment`` in a new
    process, wall clock including Python start-up, imports and model loading (U-Net, best of ``--repeats``);
(b) batch size: the runtime alone (``Runtime.predict``) at batch 1/4/8/16, ms per tile (U-Net);
(c) achieved GFLOP/s against the CPU's peak.

FLOPs per tile are counted from the exported ONNX graph after shape inference at batch 1:
Conv = 2 x output elements x (input channels / groups) x kernel height x kernel width, ConvTranspose
= 2 x input elements x (output channels / groups) x kH x kW, MatMul/Gemm = 2 x M x N x K (one
multiply-add = 2 FLOPs; BatchNorm, activations, resizes and softmax are ignored, < 1 %).
CPU peak = cores x clock x FP32 FLOPs per cycle per core. The clock is measured (a chain of dependent
integer adds, one per cycle, compiled with cc; best of 40 short runs), because a VM's ``cpu MHz`` in
/proc/cpuinfo is the nominal (TSC) clock, not the boost clock the cores actually run at; without a C
compiler the /proc/cpuinfo value is used and the report says so. FLOPs/cycle = 64 for AVX-512 with
two 512-bit FMA pipes (Zen 5, Xeon Gold/Platinum), 32 for AVX2 + FMA (two 256-bit FMA pipes, also
Zen 4's double-pumped AVX-512), 16 for AVX without FMA.
Results are printed and written to ``benchmarks/results/runtimes.md`` and ``runtimes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULTS = REPO / "benchmarks" / "results"
WORK = Path(os.environ.get("LANDCOVER_BENCH_DIR", "/tmp/landcover-bench"))
TILE = 256
BATCH = 8
ARCHS = ("Unet", "FPN")


def make_bundle(arch: str, deepness: bool = False) -> Path:
    """A saved random-weights bundle (float16 weights) with its ONNX export; reused across runs."""
    from backend.bundle import load_bundle, untrained_bundle
    from backend.models import build_from_bundle, save_weights
    from backend.onnx_export import export_onnx

    folder = WORK / "runtime-bundles" / (arch.lower() + ("-nchw" if deepness else ""))
    json_path = folder / "landcover.json"
    if json_path.is_file() and load_bundle(json_path).onnx is not None:
        return json_path
    folder.mkdir(parents=True, exist_ok=True)
    untrained = untrained_bundle(f"untrained:{arch}:resnet18", seed=0)
    weights = save_weights(build_from_bundle(untrained), folder / "landcover.weights.h5", dtype="float16")
    replace(untrained, name=f"bench-{arch.lower()}-resnet18", weights=weights).save(json_path)
    report = export_onnx(load_bundle(json_path), deepness=deepness)
    print(report.summary(), flush=True)
    return json_path


def onnx_flops_per_tile(path: Path) -> float:
    """FLOPs of one tile (batch 1) from the ONNX graph's Conv/ConvTranspose/MatMul/Gemm nodes."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in model.graph.node:  # Cast(float16 initializer) -> float32 weights keep the shape
        if node.op_type == "Cast" and node.input[0] in shapes and node.output[0] not in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, out = shapes[node.input[1]], shapes[node.output[0]]  # w: (C_out, C_in/group, kH, kW)
            total += 2 * np.prod(out) * w[1] * w[2] * w[3]
        elif node.op_type == "ConvTranspose":
            w, inp = shapes[node.input[1]], shapes[node.input[0]]  # w: (C_in, C_out/group, kH, kW)
            total += 2 * np.prod(inp) * w[1] * w[2] * w[3]
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            total += 2 * np.prod(out) * a[-1]
    return float(total)


_CLOCK_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
    double best = 1e9;
    for (int run = 0; run < 40; run++) {  /* short runs, best one: robust to other processes */
        struct timespec a, b;
        long n = 10000000;  /* 4 dependent adds per iteration: 4e7 cycles */
        clock_gettime(CLOCK_MONOTONIC, &a);
        __asm__ volatile("1:\n\tadd $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n"
                         "\tdec %%rcx\n\tjnz 1b" : "+c"(n) : : "rax", "cc");
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
        if (s < best) best = s;
    }
    printf("%f\n", 4e7 / best / 1e9);
    return 0;
}
"""


def measured_ghz() -> float | None:
    """The clock a core actually runs at, from a chain of dependent adds (x86-64 and a C compiler only)."""
    import platform
    import shutil
    import subprocess
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.machine() != "x86_64":
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "clock.c", Path(tmp) / "clock"
        src.write_text(_CLOCK_C)
        if subprocess.run([cc, "-O1", "-o", str(exe), str(src)], capture_output=True).returncode != 0:
            return None
        out = subprocess.run([str(exe)], capture_output=True, text=True)
    try:
        return float(out.stdout.strip())
    except ValueError:
        return None


def cpu_peak() -> dict:
    """Cores x GHz x FP32 FLOPs/cycle (see the module docstring)."""
    text = Path("/proc/cpuinfo").read_text()
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())
    mhz = float(next(line for line in text.splitlines() if line.startswith("cpu MHz")).split(":")[1])
    name = next(line for line in text.splitlines() if line.startswith("model name")).split(":")[1].strip()
    family = int(next(line for line in text.splitlines() if line.startswith("cpu family")).split(":")[1])
    amd = "AuthenticAMD" in text
    cores = len(os.sched_getaffinity(0))
    ghz = measured_ghz()
    clock = "measured" if ghz else "nominal, /proc/cpuinfo"
    ghz = ghz or mhz / 1000
    if "avx512f" in flags and not (amd and family == 25):  # Zen 4 (family 25) runs 512-bit FMAs in two halves
        per_cycle, isa = 64, "AVX-512, 2 x 512-bit FMA"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "AVX2, 2 x 256-bit FMA"
    else:
        per_cycle, isa = 16, "AVX, no FMA"
    return {"cpu": f"{name} (family {family})", "cores": cores, "ghz": round(ghz, 2), "clock": clock,
            "nominal_ghz": round(mhz / 1000, 3), "flops_per_cycle": per_cycle, "isa": isa,
            "peak_gflops": round(cores * ghz * per_cycle, 1)}


def make_runtime(json_path: Path, kind: str, **kw):
    from backend.bundle import load_bundle
    from backend.onnx_runtime import OnnxRuntime
    from backend.runtime import make_runtime as make

    bundle = load_bundle(json_path)
    runtime = OnnxRuntime(bundle, **kw) if kw else make(bundle, kind)
    runtime.predict(np.zeros((BATCH, TILE, TILE, 3), np.float32))  # trace / optimise + warm up
    return bundle, runtime


def end_to_end(json_path: Path, src: Path, size: int, flops: float, repeats: int) -> list[dict]:
    """Both runtimes on the same raster, alternating; the best of ``repeats`` rounds per runtime."""
    from backend.inference import segment
    from backend.progress import make_progress

    runtimes = {kind: make_runtime(json_path, kind) for kind in ("onnx", "tensorflow")}
    times: dict[str, list[float]] = {kind: [] for kind in runtimes}
    for _ in range(repeats):
        for kind, (bundle, runtime) in runtimes.items():
            t0 = time.perf_counter()
            result = segment(src, WORK / f"rt_out_{bundle.name}_{kind}.tif", bundle, batch_size=BATCH,
                             runtime=runtime, progress=make_progress("none"))
            times[kind].append(time.perf_counter() - t0)
    return [_e2e_row(bundle, kind, result.tiles_predicted, size, flops, times[kind], runtime)
            for kind, (bundle, runtime) in runtimes.items()]


def cold_cli(json_path: Path, src: Path, repeats: int) -> list[dict]:
    """Wall-clock seconds of ``python -m backend segment`` in a fresh process, per runtime (best of ``repeats``)."""
    import subprocess

    times: dict[str, list[float]] = {"onnx": [], "tensorflow": []}
    for _ in range(repeats):
        for kind in times:
            cmd = [sys.executable, "-m", "backend", "segment", str(src), str(WORK / f"cli_{kind}.tif"), "--model",
                   str(json_path), "--runtime", kind, "--progress", "none"]
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
            times[kind].append(time.perf_counter() - t0)
    return [{"runtime": kind, "seconds": round(min(ts), 2), "all_seconds": [round(t, 2) for t in ts]}
            for kind, ts in times.items()]


def _e2e_row(bundle, kind: str, tiles: int, size: int, flops: float, times: list[float], runtime) -> dict:
    seconds = min(times)
    return {
        "model": f"{bundle.architecture}-ResNet18", "runtime": kind, "size": size, "tiles": tiles,
        "batch": BATCH, "seconds": round(seconds, 2), "all_seconds": [round(t, 2) for t in times],
        "ms_per_tile": round(1000 * seconds / tiles, 1), "mp_per_s": round(size * size / seconds / 1e6, 3),
        "gflops_per_s": round(flops * tiles / seconds / 1e9, 1),
        "threads": getattr(runtime, "threads", None),
    }


def batch_sweep(variants: dict[str, tuple[Path, dict, list[int]]], tiles: int) -> list[dict]:
    """``Runtime.predict`` alone, ms per tile, for each variant and batch size.

    The variants take turns call by call, and the fastest call is reported (plus the median): the
    machine may be shared, and a call another process slowed down says nothing about the runtime.
    """
    runtimes = {label: make_runtime(path, label.split(",")[0], **kw)[1] for label, (path, kw, _) in variants.items()}
    x = np.random.default_rng(0).random((16, TILE, TILE, 3), dtype=np.float32)
    rows = []
    for b in sorted({b for _, _, batches in variants.values() for b in batches}):
        chosen = {label: rt for label, rt in runtimes.items() if b in variants[label][2]}
        times: dict[str, list[float]] = {label: [] for label in chosen}
        for rt in chosen.values():
            rt.predict(x[:b])  # warm up: the first call at a new batch shape plans memory
        for _ in range(max(2, tiles // b)):
            for label, rt in chosen.items():
                t0 = time.perf_counter()
                rt.predict(x[:b])
                times[label].append((time.perf_counter() - t0) / b)
        for label, ts in times.items():
            rows.append({"runtime": label, "batch": b, "ms_per_tile": round(1000 * min(ts), 1),
                         "median_ms_per_tile": round(1000 * float(np.median(ts)), 1)})
    return rows


def class_agreement(res: list[dict], name: str) -> float | None:
    import rasterio

    paths = [WORK / f"rt_out_bench-{name}-resnet18_{k}.tif" for k in ("onnx", "tensorflow")]
    if not all(p.exists() for p in paths):
        return None
    arrays = []
    for p in paths:
        with rasterio.open(p) as ds:
            arrays.append(ds.read(1))
    return round(100 * float((arrays[0] == arrays[1]).mean()), 3)


def markdown(res: dict) -> str:
    peak = res["cpu"]
    lines = [
        f"Machine: {peak['cpu']}, {peak['cores']} cores at {peak['ghz']} GHz ({peak['isa']}); load average at start "
        f"{res['load_average']}; {res['date']}. Random-initialised models (same float16-valued weights for both "
        f"runtimes), {TILE} px tiles, overlap 32 px, batch {BATCH}, onnxruntime {res['versions']['onnxruntime']}, "
        f"TensorFlow {res['versions']['tensorflow']}, ONNX opset 17.",
        "",
        f"**(a) `segment` end to end** on a synthetic {res['size']}² RGB GeoTIFF (read, predict, blend, write); "
        f"runtimes alternating, best of {res['repeats']} rounds each",
        "",
        "| model | runtime | tiles | seconds (best) | ms/tile | MP/s | GFLOP/s | % of peak | speedup | same classes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["end_to_end"]:
        tf_row = next((t for t in res["end_to_end"] if t["model"] == r["model"] and t["runtime"] == "tensorflow"), None)
        speed = f"{tf_row['seconds'] / r['seconds']:.2f}x" if tf_row else ""
        same = res["agreement"].get(r["model"]) if r["runtime"] == "onnx" else None
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['tiles']} | {r['seconds']} | {r['ms_per_tile']} | {r['mp_per_s']} | "
            f"{r['gflops_per_s']} | {100 * r['gflops_per_s'] / peak['peak_gflops']:.0f} % | {speed} | "
            f"{'' if same is None else f'{same} %'} |"
        )
    cli = {r["runtime"]: r["seconds"] for r in res.get("cold_cli", [])}
    if cli:
        lines += [
            "",
            f"**(a') `python -m backend segment` as a new process** (U-Net-ResNet18, {res['size']}² raster, wall clock "
            f"with start-up, imports and model loading, best of {res['repeats']}): onnx {cli['onnx']} s, tensorflow "
            f"{cli['tensorflow']} s, speedup {cli['tensorflow'] / cli['onnx']:.2f}x (the ONNX path never imports "
            "TensorFlow).",
        ]
    lines += [
        "",
        f"**(b) batch size**: `Runtime.predict` alone, U-Net-ResNet18, ms per tile: fastest call (median in "
        f"brackets), variants taking turns call by call, about {res['sweep_tiles']} tiles per setting",
        "",
        "| runtime | " + " | ".join(f"batch {b}" for b in res["batches"]) + " |",
        "|---|" + "---|" * len(res["batches"]),
    ]
    for label in dict.fromkeys(r["runtime"] for r in res["batch_sweep"]):
        rows = {r["batch"]: r for r in res["batch_sweep"] if r["runtime"] == label}
        cells = [f"{rows[b]['ms_per_tile']} ({rows[b]['median_ms_per_tile']})" if b in rows else ""
                 for b in res["batches"]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**(c) FLOPs and peak**: "
        + "; ".join(f"{m}: {g:.2f} GFLOP per {TILE}² tile" for m, g in res["gflop_per_tile"].items())
        + f". CPU peak = {peak['cores']} cores x {peak['ghz']} GHz x {peak['flops_per_cycle']} FP32 FLOPs/cycle "
        f"= {peak['peak_gflops']} GFLOP/s (clock {peak['clock']}; nominal {peak['nominal_ghz']} GHz). "
        "FLOPs counted from the ONNX graph (Conv/ConvTranspose/MatMul, "
        "2 per multiply-add, shapes from ONNX shape inference at batch 1); achieved GFLOP/s = FLOPs per tile x tiles "
        "/ end-to-end seconds, so it includes reading, blending and writing.",
        "",
        "A load average above the core count means other processes shared the CPU during the run: compare the "
        "runtimes within one run (they alternate), not absolute figures across runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="synthetic raster side in pixels (default 2048)")
    parser.add_argument("--quick", action="store_true", help="1024² raster, U-Net only, short batch sweep")
    parser.add_argument("--repeats", type=int, default=2, help="end-to-end rounds per runtime, best reported")
    args = parser.parse_args()
    import onnxruntime
    from bench_engine import make_raster

    from backend.tf_import import import_tensorflow

    tf = import_tensorflow()
    size = 1024 if args.quick else args.size
    archs = ARCHS[:1] if args.quick else ARCHS
    batches = [1, 4, 8, 16]
    sweep_tiles = 16 if args.quick else 32
    res: dict = {
        "date": time.strftime("%Y-%m-%d"), "size": size, "cpu": cpu_peak(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "versions": {"onnxruntime": onnxruntime.__version__, "tensorflow": tf.__version__},
        "end_to_end": [], "batch_sweep": [], "batches": batches, "sweep_tiles": sweep_tiles,
        "gflop_per_tile": {}, "agreement": {}, "repeats": args.repeats, "cold_cli": [],
    }
    src = make_raster(WORK / f"bench_{size}.tif", size)
    for arch in archs:
        json_path = make_bundle(arch)
        from backend.bundle import load_bundle

        flops = onnx_flops_per_tile(load_bundle(json_path).onnx.file)
        model = f"{arch}-ResNet18"
        res["gflop_per_tile"][model] = round(flops / 1e9, 3)
        for row in end_to_end(json_path, src, size, flops, args.repeats):
            res["end_to_end"].append(row)
            print(json.dumps(row), flush=True)
        res["agreement"][model] = class_agreement(res["end_to_end"], arch.lower())
        if arch == "Unet":
            res["cold_cli"] = cold_cli(json_path, src, args.repeats)
            print(json.dumps(res["cold_cli"]), flush=True)
            variants = {
                "onnx": (json_path, {}, batches),
                "tensorflow": (json_path, {}, batches),
                "onnx, NCHW (Deepness export)": (make_bundle(arch, deepness=True), {}, [BATCH]),
            }
            res["batch_sweep"] = batch_sweep(variants, sweep_tiles)
            # Alone: spinning workers keep a core busy after each call and would slow whatever runs next.
            res["batch_sweep"] += batch_sweep({"onnx, spinning threads": (json_path, {"spinning": True}, [BATCH])},
                                              sweep_tiles)
            print(json.dumps(res["batch_sweep"]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "runtimes_quick" if args.quick else "runtimes"
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(res)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
