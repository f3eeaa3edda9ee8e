"""Soak test of the "nothing lost" promise: ``make soak`` (``python scripts/soak.py [--runs N] [--seed S]``).

Runs ``python -m backend segment`` many times into the same output with random faults — SIGTERM or SIGKILL at a
random moment, a file-size limit that makes writes fail part-way (a real write error: RLIMIT_FSIZE, like a disk
that fills up), two writers racing for the same output — and after each run checks the output set:

* **kept**: byte-identical to the last good result (the run failed or was stopped; or it succeeded, since the
  same input and model give the same bytes);
* **new**: a complete, consistent new result (raster readable to the last block, areas JSON equal to the raster's
  pixel counts, style and PAM files present) from a run that reported success;
* **lost**: anything else — a corrupt raster, a missing file, area tables that describe another raster, a
  success exit with a broken result, or a finished-looking file left by a failed run.

Prints the counts per fault and exits 1 if anything was lost. Not part of ``make test`` (minutes, not seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.contract import output_files  # noqa: E402 - after the path setup, as a script

FAULTS = ("none", "sigterm", "sigkill", "file_size", "race")


@dataclass(frozen=True)
class Outcome:
    """One run's verdict and why."""

    fault: str
    verdict: str  # kept | new | lost
    why: str = ""


def _digest(files: list[Path]) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def result_files(out: Path) -> list[Path]:
    """Every file a finished result consists of."""
    return output_files(out).all()


def check_complete(out: Path) -> str:
    """'' when the result at ``out`` is complete and consistent, else what is wrong."""
    import numpy as np
    import rasterio

    files = output_files(out)
    missing = [f.name for f in files.all() if not f.is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        with rasterio.open(out) as ds:
            data = ds.read(1)  # every block: a truncated or corrupt file fails here
    except Exception as exc:  # noqa: BLE001 - any read failure is a broken result
        return f"raster unreadable: {exc}"
    areas = json.loads(files.areas_json.read_text())
    counts = np.bincount(data[data != 255].ravel(), minlength=len(areas["classes"]))
    if [c["pixels"] for c in areas["classes"]] != counts[: len(areas["classes"])].tolist():
        return "areas JSON does not describe the raster beside it"
    return ""


def _stray(folder: Path, out: Path) -> list[str]:
    """Finished-looking files that are not part of the result (a failed run's leftovers)."""
    names = {f.name for f in result_files(out)}
    return [p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name not in names
            and p.name != "input.tif"]


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _segment(src: Path, out: Path, preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "backend", "segment", str(src), str(out), "--progress", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO,
                            preexec_fn=preexec)


def run_one(fault: str, src: Path, out: Path, rng: random.Random, typical_s: float) -> Outcome:
    """Run once with ``fault`` and judge the output set against the previous good one."""
    before = _digest(result_files(out))
    procs = []
    if fault == "file_size":
        size = os.path.getsize(out) if out.exists() else 200_000
        procs.append(_segment(src, out, _limit_file_size(rng.randint(1_000, max(2_000, size)))))
    else:
        procs.append(_segment(src, out))
    if fault == "race":
        time.sleep(rng.uniform(0, typical_s / 2))
        procs.append(_segment(src, out))
    if fault in ("sigterm", "sigkill"):
        time.sleep(rng.uniform(0, typical_s))
        procs[0].send_signal(signal.SIGTERM if fault == "sigterm" else signal.SIGKILL)
    codes = [p.wait(timeout=600) for p in procs]
    for p in procs:
        p.stderr.close()
    after = _digest(result_files(out))
    problem = check_complete(out)
    stray = _stray(out.parent, out)
    if stray:
        return Outcome(fault, "lost", f"left behind: {', '.join(stray)}")
    if after == before and not problem:
        return Outcome(fault, "kept")
    if not problem and any(code == 0 for code in codes):
        return Outcome(fault, "new")
    if problem:
        return Outcome(fault, "lost", f"{problem} (exit codes {codes})")
    return Outcome(fault, "lost", f"result changed although every run failed (exit codes {codes})")


def make_input(folder: Path) -> Path:
    """A 512 x 512 crop of the demo orthophoto (9 tiles: a run takes about a second)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(REPO / "demo" / "orthophoto.tif") as src:
        window = Window(512, 512, 512, 512)
        profile = {**src.profile, "width": 512, "height": 512, "transform": src.window_transform(window)}
        data = src.read(window=window)
    path = folder / "input.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="segmentations to run (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the faults (default 0)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="landcover_soak_") as tmp:
        folder = Path(tmp)
        src = make_input(folder)
        out = folder / "landcover.tif"
        start = time.monotonic()
        first = run_one("none", src, out, rng, 1.0)
        typical_s = time.monotonic() - start
        if first.verdict != "new":
            print(f"the first, fault-free run did not produce a result: {first.why}", file=sys.stderr)
            return 1
        outcomes = [first]
        for i in range(1, args.runs):
            outcome = run_one(rng.choice(FAULTS), src, out, rng, typical_s)
            outcomes.append(outcome)
            if outcome.verdict == "lost":
                print(f"run {i}: {outcome.fault}: LOST: {outcome.why}", flush=True)
                first_good = run_one("none", src, out, rng, typical_s)  # start the next run from a good result
                if first_good.verdict == "lost":
                    print(f"  and a fault-free run after it failed too: {first_good.why}", file=sys.stderr)
                    return 1
    table = Counter((o.fault, o.verdict) for o in outcomes)
    print(f"{len(outcomes)} runs (seed {args.seed}), about {typical_s:.1f} s each without faults:")
    print(f"{'fault':<10} {'kept':>6} {'new':>6} {'lost':>6}")
    for fault in FAULTS:
        print(f"{fault:<10} " + " ".join(f"{table[(fault, v)]:>6}" for v in ("kept", "new", "lost")))
    lost = sum(table[(f, "lost")] for f in FAULTS)
    print(f"lost or mixed results: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
