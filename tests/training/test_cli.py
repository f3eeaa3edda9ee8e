from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from tests.training.conftest import coded_pair, write_pair
from training.cli import main

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["synthetic", "patch", "filter", "split", "train", "evaluate", "export", "run", "quantize",
            "fake-landcoverai", "check-data", "sanity", "heldout", "average"]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_help_is_fast_and_imports_no_tensorflow() -> None:
    code = "import sys, training.cli, training.config, training.pipeline; " \
           "print('tensorflow' in sys.modules, 'segmentation_models' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False False", out.stderr
    result = run_cli("--help")
    assert result.returncode == 0 and all(c in result.stdout for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: python -m training " + command in capsys.readouterr().out


def test_synthetic_patch_filter_split_commands(tmp_path) -> None:
    assert main(["synthetic", str(tmp_path / "d"), "--orthophotos", "3", "--size", "128", "--seed", "1"]) == 0
    assert len(list((tmp_path / "d" / "images").glob("*.tif"))) == 3
    assert main(["synthetic", str(tmp_path / "s"), "--orthophotos", "2", "--size", "128", "--seed", "1",
                 "--style", "v1,v3"]) == 0
    with rasterio.open(tmp_path / "d/images/synthetic_1_000.tif") as a, \
            rasterio.open(tmp_path / "s/images/synthetic_1_000.tif") as b:
        assert (a.read() == b.read()).all()  # scene 0 is v1 in both
    with rasterio.open(tmp_path / "d/images/synthetic_1_001.tif") as a, \
            rasterio.open(tmp_path / "s/images/synthetic_1_001.tif") as b:
        assert (a.read() != b.read()).any()  # scene 1 is v3
    assert main(["patch", str(tmp_path / "d"), str(tmp_path / "p"), "--size", "64"]) == 0
    assert len(list((tmp_path / "p" / "masks").glob("*.png"))) == 12
    assert main(["filter", str(tmp_path / "p"), "--threshold", "0"]) == 0
    assert main(["split", str(tmp_path / "p"), "--fractions", "0.4", "0.3", "0.3"]) == 0
    assert (tmp_path / "split" / "eval.txt").read_text().strip()


def test_bad_input_exits_2_without_traceback(tmp_path) -> None:
    image, mask = coded_pair(64, 64)
    mask[0, 0] = 9
    write_pair(tmp_path / "d", "bad", image, mask)
    result = run_cli("patch", str(tmp_path / "d"), str(tmp_path / "p"), "--size", "64")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "outside 0..4" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, match",
    [
        (["patch", "{tmp}/nowhere", "{tmp}/p"], "does not exist"),
        (["filter", "{tmp}"], "index.csv does not exist"),
        (["run", "--config", "{tmp}/none.yaml"], "does not exist"),
        (["run", "--config", str(REPO / "training/configs/smoke.yaml"), "--set", "train.epoch=1"], "unknown config"),
        (["export", "{tmp}", "{tmp}/b.json"], "train.json does not exist"),
        (["heldout", "--styles", "mixed"], "a scene has one style"),
        (["synthetic", "{tmp}/s", "--style", "v9"], "comma list of styles"),
        (["heldout", "--model", "untrained:Unet:resnet18"], "untrained network"),
    ],
)
def test_user_errors_exit_2(args, match, tmp_path, capsys) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
