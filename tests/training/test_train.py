"""Training: a 2-epoch x 1-step run on 64 px patches (the session fixture ``tiny_run``), resume."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from training.errors import TrainingError
from training.train import TrainParams, train

pytestmark = pytest.mark.slow


def test_training_writes_checkpoint_history_and_curves(tiny_run) -> None:
    _, work, summary = tiny_run
    model = work / "model"
    for name in ("best.weights.h5", "history.csv", "loss.png", "iou.png", "train.json", "state.json", "config.yaml"):
        assert (model / name).is_file(), name
    rows = list(csv.DictReader(open(model / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["val_miou"]) <= 1.0 and np.isfinite(float(r["loss"])) for r in rows)
    state = json.loads((model / "state.json").read_text())
    best = max(float(r["val_miou"]) for r in rows)
    assert state["epoch"] == 2 and state["best_miou"] == pytest.approx(best, abs=1e-6)
    assert summary["best_val_miou"] == state["best_miou"]


def test_resume_continues_from_the_checkpoint(tiny_run, tmp_path) -> None:
    config, work, _ = tiny_run
    model = tmp_path / "model"
    shutil.copytree(work / "model", model)  # leave the shared run untouched
    params = TrainParams(**{**config.train.__dict__, "epochs": 3})
    result = train(work / "patches", work / "split", model, params, resume=True)
    rows = list(csv.DictReader(open(model / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and result.epochs_done == 3
    assert json.loads((model / "state.json").read_text())["epoch"] == 3
    with pytest.raises(TrainingError, match="already finished"):
        train(work / "patches", work / "split", model, params, resume=True)


def test_resume_without_a_run_is_an_error(tiny_run, tmp_path) -> None:
    config, work, _ = tiny_run
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(work / "patches", work / "split", tmp_path / "fresh", config.train, resume=True)


def test_multi_device_training_runs_mirrored_on_two_logical_cpus(tmp_path) -> None:
    """The several-GPU path (MirroredStrategy) runs a real training step here, on two logical CPU devices,
    so it is known to work before anyone rents GPUs."""
    import os
    import subprocess
    import sys
    import textwrap

    from tests.conftest import REPO

    code = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from training.config import load_config
        from training.pipeline import run_pipeline
        from training.train import _strategy
        work = {str(tmp_path)!r}
        config = load_config({str(REPO / "training" / "configs" / "smoke.yaml")!r}, [
            f"workdir={{work}}", "export.out=null", f"export.model_card={{work}}/card.md",
            "data.synthetic.orthophotos=3", "data.synthetic.size=128", "split.train=0.4", "split.val=0.3",
            "split.eval=0.3", "train.batch_size=2", "train.steps_per_epoch=1", "train.epochs=1",
            "train.distribute=mirrored"])
        assert config.train.distribute == "mirrored"
        replicas = _strategy(tf, "mirrored").num_replicas_in_sync
        summary = run_pipeline(config, say=lambda _m: None)
        print(json.dumps({{"replicas": replicas, "miou": summary["best_val_miou"]}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and 0.0 <= result["miou"] <= 1.0
    rows = list(csv.DictReader(open(tmp_path / "model" / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1"] and np.isfinite(float(rows[0]["loss"]))


def test_distribute_mode_is_checked() -> None:
    with pytest.raises(TrainingError, match="distribute must be one of auto, mirrored, none"):
        TrainParams(distribute="tpu")


def test_mixed_precision_is_used_on_a_gpu_and_refused_on_a_cpu(monkeypatch, tmp_path) -> None:
    """``train.mixed_precision: true``: float16 compute with a float32 softmax on GPUs; float32 on this CPU."""
    from backend.tf_import import import_keras, import_segmentation_models, import_tensorflow
    from training.train import _build_model, precision_policy

    tf, keras, sm = import_tensorflow(), import_keras(), import_segmentation_models()
    try:
        cpu = precision_policy(tf, keras, True)
        assert cpu["policy"] == "float32" and "no GPU" in cpu["why"]
        assert keras.mixed_precision.global_policy().name == "float32"
        real = tf.config.list_physical_devices
        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))
        gpu = precision_policy(tf, keras, True)
        assert gpu == {"asked": True, "policy": "mixed_float16"}
        model, _, _ = _build_model(tf, keras, sm, TrainParams(mixed_precision=True, distribute="none"), 1)
        assert model.output.dtype == tf.float32  # softmax and loss in float32
        convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        assert convs and all(layer.compute_dtype == "float16" and layer.dtype == "float32" for layer in convs)
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)  # gradients scaled
        model.save_weights(tmp_path / "best.weights.h5")  # as the epoch callback saves the best epoch
    finally:
        keras.mixed_precision.set_global_policy("float32")
    from backend.models import build_model, load_weights

    plain = build_model("Unet", "resnet18", 5, 3)  # what export rebuilds, float32
    load_weights(plain, tmp_path / "best.weights.h5")
    for a, b in zip(plain.weights, [w for w in model.weights if "loss_scale" not in w.name], strict=False):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_train_json_says_which_precision_ran(tiny_run) -> None:
    _, work, _ = tiny_run
    info = json.loads((work / "model" / "train.json").read_text())
    assert info["precision"] == {"asked": False, "policy": "float32"}


def _weights(path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        group = f["weights"]
        return {group[k].attrs["name"]: np.asarray(group[k]) for k in group}


def test_fine_tuning_starts_from_the_given_model(tiny_run, tmp_path) -> None:
    """init_weights: with a vanishing learning rate the result keeps the starting model's convolutions;
    the same run from random weights does not."""
    config, work, _ = tiny_run
    init = work / "model" / "best.weights.h5"
    base = {**config.train.__dict__, "epochs": 1, "learning_rate": 1e-12, "seed": 1, "init_weights": None}
    train(work / "patches", work / "split", tmp_path / "ft", TrainParams(**{**base, "init_weights": str(init)}))
    train(work / "patches", work / "split", tmp_path / "fresh", TrainParams(**base))
    start, tuned, fresh = (_weights(p / "best.weights.h5") for p in (work / "model", tmp_path / "ft",
                                                                      tmp_path / "fresh"))
    kernels = [n for n in start if "kernel" in n]
    assert len(kernels) > 20
    # one Adam step of 1e-12: the starting model's values (weights are kept in float32 during training)
    assert all(np.abs(start[n] - tuned[n]).max() < 1e-9 for n in kernels)
    assert all(np.abs(start[n] - fresh[n]).max() > 1e-3 for n in kernels)


def test_init_weights_must_exist_and_fit(tiny_run, tmp_path) -> None:
    config, work, _ = tiny_run
    missing = TrainParams(**{**config.train.__dict__, "init_weights": str(tmp_path / "nope.json")})
    with pytest.raises(TrainingError, match="does not exist; train the model it names first"):
        train(work / "patches", work / "split", tmp_path / "ft0", missing)
    with pytest.raises(TrainingError, match="not both"):
        TrainParams(init_weights=str(work / "model" / "best.weights.h5"),
                    encoder_weights=str(work / "model" / "best.weights.h5"))
    bundle = tmp_path / "fpn.json"
    shutil.copy(work / "model" / "best.weights.h5", tmp_path / "w.h5")
    from tests.conftest import REPO

    classes = json.loads((REPO / "backend" / "bundles" / "default" / "landcover.json").read_text())["classes"]
    bundle.write_text(json.dumps({"format": 1, "name": "fpn", "architecture": "FPN", "backbone": "resnet18",
                                  "tile_size": 64, "weights": "w.h5", "classes": classes}))
    params = TrainParams(**{**config.train.__dict__, "epochs": 1, "init_weights": str(bundle)})
    with pytest.raises(TrainingError, match="is a FPN/resnet18 model; this run trains Unet/resnet18"):
        train(work / "patches", work / "split", tmp_path / "ft", params)
