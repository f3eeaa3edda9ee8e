"""A new run cleans up the hidden half-written files that killed runs left in its folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from training.config import load_config
from training.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the PID no longer exists (a reuse would only keep the files)
    return child.pid


def test_a_run_removes_what_killed_runs_left_and_keeps_live_and_finished_files(tmp_path) -> None:
    work, bundle_dir = tmp_path / "work", tmp_path / "elsewhere" / "bundle"
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = [work / "model" / f".weights.h5.part-{dead}", work / "eval" / f".report.json.part-{dead}",
                work / f".summary.json.part-{dead}", bundle_dir / f".landcover.onnx.part-{dead}"]
        kept = [work / "model" / f".weights.h5.part-{live.pid}", work / "model" / "weights.h5",
                work / "eval" / ".notes.part", bundle_dir / "landcover.json",
                # Beside the bundle, other files are not the run's: a folder shared with other work keeps them.
                bundle_dir / f".notes.txt.part-{dead}", bundle_dir / "sub" / f".landcover.onnx.part-{dead}"]
        for path in left + kept:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        config = load_config(REPO / "training" / "configs" / "smoke.yaml",
                             [f"workdir={work}", f"export.out={bundle_dir / 'landcover.json'}",
                              "data.synthetic.orthophotos=1", "data.synthetic.size=64"])
        said: list[str] = []
        run_pipeline(config, until="synthetic", say=said.append)
        assert [p for p in left if p.exists()] == [] and all(p.exists() for p in kept)
        assert f"removed {len(left)} unfinished file(s) of killed earlier runs" in "\n".join(said)
        assert (work / "data").is_dir()  # and the run went on
    finally:
        live.kill()
        live.wait()
