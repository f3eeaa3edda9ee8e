"""Train a segmentation-models network on the train split, keeping the best checkpoint by val mIoU.

Model folder contents: ``best.weights.h5`` (backend weight layout, float32), ``checkpoint/`` (model
and optimizer state for ``--resume``), ``state.json`` (epochs done, best score), ``history.csv``,
``loss.png``, ``iou.png``, ``train.json`` (what export needs) and ``config.yaml`` (the resolved config).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.contract import write_text_atomic
from training import CLASS_NAMES, NUM_CLASSES
from training.augment import AugmentParams
from training.errors import TrainingError

BEST_WEIGHTS = "best.weights.h5"
TRAIN_JSON = "train.json"
STATE_JSON = "state.json"
HISTORY_CSV = "history.csv"


DISTRIBUTE_MODES = ("auto", "mirrored", "none")


@dataclass(frozen=True)
class TrainParams:
    """Model, optimisation and augmentation settings (the seed's defaults)."""

    architecture: str = "Unet"
    backbone: str = "resnet18"
    encoder_weights: str | None = None  # None, or a local .h5 file (no downloads here)
    #: Start from a trained model instead of random weights (fine-tuning, or a second stage of a curriculum):
    #: a bundle JSON or its weights .h5, of the same architecture and backbone.
    init_weights: str | None = None
    batch_size: int = 16
    epochs: int = 20
    learning_rate: float = 1e-3
    cosine_decay: bool = False  # decay the learning rate to 5 % over the whole run (the seed kept it constant)
    steps_per_epoch: int | None = None  # None: one pass over the train split
    val_batches: int | None = None  # None: the whole val split every epoch
    seed: int = 0
    augment: AugmentParams = field(default_factory=AugmentParams)
    #: auto: MirroredStrategy over the GPUs when there are several; mirrored: always, over the GPUs, or the
    #: logical CPU devices when there is no GPU (how the multi-GPU path is tested on a CPU); none: one device.
    distribute: str = "auto"
    #: float16 compute with float32 weights (Keras "mixed_float16") on GPUs, about 2x faster on tensor-core GPUs;
    #: ignored (float32) on a machine without a GPU, where float16 kernels are slower or missing.
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        if self.architecture not in ("Unet", "FPN", "Linknet"):
            raise TrainingError(f"architecture must be Unet, FPN or Linknet, got {self.architecture!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise TrainingError("batch_size and epochs must be >= 1")
        if not self.learning_rate > 0:
            raise TrainingError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TrainingError("steps_per_epoch must be >= 1 (or null for one pass)")
        if self.val_batches is not None and self.val_batches < 1:
            raise TrainingError("val_batches must be >= 1 (or null for all)")
        if self.distribute not in DISTRIBUTE_MODES:
            raise TrainingError(f"distribute must be one of {', '.join(DISTRIBUTE_MODES)}, got {self.distribute!r}")
        if self.encoder_weights not in (None, "imagenet") and not Path(self.encoder_weights).expanduser().is_file():
            raise TrainingError(
                f"encoder weights file {self.encoder_weights} does not exist; pass a local .h5 file or null"
            )
        if self.init_weights is not None and self.encoder_weights is not None:
            raise TrainingError("set init_weights or encoder_weights, not both (init_weights sets every layer)")


@dataclass
class TrainResult:
    """What a training run produced."""

    model_dir: Path
    best_weights: Path
    best_miou: float
    best_epoch: int
    epochs_done: int
    seconds: float


def _strategy(tf: Any, mode: str = "auto") -> Any:
    """The distribution strategy ``mode`` (see :attr:`TrainParams.distribute`) asks for."""
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    return tf.distribute.get_strategy()


def build_loss() -> Any:
    """The seed's loss: categorical focal + Jaccard."""
    from backend.tf_import import import_segmentation_models

    sm = import_segmentation_models()
    return sm.losses.CategoricalFocalLoss() + sm.losses.JaccardLoss()


def evaluate_batches(
    model: Any, dataset: Any, loss_fn: Any, max_batches: int | None = None
) -> tuple[np.ndarray, float]:
    """Confusion matrix and mean loss of ``model`` over (image, one-hot) batches."""
    from training.metrics import confusion_matrix

    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    loss_sum, n = 0.0, 0
    for i, (x, y) in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        pred = model.predict_on_batch(x)
        loss_sum += float(loss_fn(y, pred)) * int(x.shape[0])
        n += int(x.shape[0])
        cm += confusion_matrix(np.argmax(y, -1), np.argmax(pred, -1), NUM_CLASSES)
    return cm, loss_sum / max(n, 1)


def train(
    patch_dir: Path,
    split_dir: Path,
    model_dir: Path,
    params: TrainParams,
    resume: bool = False,
    config: dict[str, Any] | None = None,
    scale: float = 255.0,
) -> TrainResult:
    """Train on ``split_dir/train.txt``, validate on ``val.txt``, write everything into ``model_dir``."""
    from backend.tf_import import import_keras, import_segmentation_models, import_tensorflow

    # Import the whole TensorFlow stack first: a missing package is reported before any file is touched.
    tf = import_tensorflow()
    keras = import_keras()
    sm = import_segmentation_models()
    patch_dir, split_dir, model_dir = Path(patch_dir), Path(split_dir), Path(model_dir)
    train_names, val_names = _read_splits(patch_dir, split_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = _initial_state(model_dir, params, resume)
    steps = _steps_per_epoch(params, len(train_names))
    precision = precision_policy(tf, keras, params.mixed_precision)
    try:
        return _train(tf, keras, sm, patch_dir, split_dir, model_dir, params, resume, config, scale, train_names,
                      val_names, state, steps, precision)
    finally:
        keras.mixed_precision.set_global_policy("float32")  # evaluation and export in this process run float32


def _train(tf: Any, keras: Any, sm: Any, patch_dir: Path, split_dir: Path, model_dir: Path, params: TrainParams,
           resume: bool, config: dict[str, Any] | None, scale: float, train_names: list[str], val_names: list[str],
           state: dict[str, Any], steps: int, precision: dict[str, Any]) -> TrainResult:
    """The body of :func:`train`, under the dtype policy already set."""
    model, loss_fn, checkpoint = _build_model(tf, keras, sm, params, steps)
    manager = _checkpoint_manager(tf, checkpoint, model_dir, resume)
    train_ds, val_ds = _build_datasets(patch_dir, train_names, val_names, params, scale, int(state["epoch"]))
    resolved = _describe_run(patch_dir, split_dir, params, scale, len(train_names), len(val_names), steps)
    resolved["precision"] = precision
    if precision.get("why"):
        print(f"note: train.mixed_precision: {precision['why']}", flush=True)
    _write_run_files(model_dir, resolved, config)
    epoch_end = _epoch_end_callback(keras, model_dir, params, state, manager, val_ds, loss_fn)
    _fit(model, train_ds, params, steps, int(state["epoch"]), [ProgressBar(params.epochs, steps), epoch_end])
    return _report(model_dir, resolved, state)


def _read_splits(patch_dir: Path, split_dir: Path) -> tuple[list[str], list[str]]:
    """The train and val patch names, after checking that every patch file is there.

    Raises:
        TrainingError: a split list is missing or empty, or a listed patch file does not exist.
    """
    from training.data import check_patches_exist
    from training.split import read_split

    train_names = read_split(split_dir, "train")
    val_names = read_split(split_dir, "val")
    check_patches_exist(patch_dir, train_names + val_names)
    return train_names, val_names


def _initial_state(model_dir: Path, params: TrainParams, resume: bool) -> dict[str, Any]:
    """The run state to start from: the saved one when resuming, a fresh one otherwise.

    A fresh run removes the previous run's ``history.csv``, since rows are appended epoch by epoch.

    Raises:
        TrainingError: resuming without a saved state, or a run that already did ``params.epochs`` epochs.
    """
    state_path = model_dir / STATE_JSON
    state: dict[str, Any] = {"epoch": 0, "best_miou": -1.0, "best_epoch": 0, "seconds": 0.0}
    if resume:
        if not state_path.is_file():
            raise TrainingError(f"nothing to resume in {model_dir} (no {STATE_JSON}); train without --resume first")
        state.update(json.loads(state_path.read_text()))
        if state["epoch"] >= params.epochs:
            raise TrainingError(
                f"the run in {model_dir} already finished {state['epoch']} of {params.epochs} epochs; "
                "raise epochs to train longer"
            )
    elif (model_dir / HISTORY_CSV).exists():
        (model_dir / HISTORY_CSV).unlink()
    return state


def _steps_per_epoch(params: TrainParams, train_count: int) -> int:
    """Optimizer steps per epoch: ``params.steps_per_epoch``, or one pass over the train split."""
    return params.steps_per_epoch or max(train_count // params.batch_size, 1)


def precision_policy(tf: Any, keras: Any, wanted: bool) -> dict[str, Any]:
    """Set Keras's global dtype policy for ``train.mixed_precision``; returns what was asked, used and why."""
    if not wanted:
        keras.mixed_precision.set_global_policy("float32")
        return {"asked": False, "policy": "float32"}
    if not tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("float32")
        return {"asked": True, "policy": "float32",
                "why": "no GPU: float16 is slower or unsupported on CPUs, so training stays float32"}
    keras.mixed_precision.set_global_policy("mixed_float16")
    return {"asked": True, "policy": "mixed_float16"}


def _build_model(tf: Any, keras: Any, sm: Any, params: TrainParams, steps_per_epoch: int) -> tuple[Any, Any, Any]:
    """Build and compile the network under the distribution strategy and ``params.mixed_precision``.

    Returns:
        ``(model, loss_fn, checkpoint)``; the checkpoint tracks the model and its optimizer.
    """
    from backend.models import build_model

    keras.utils.set_random_seed(params.seed)
    strategy = _strategy(tf, params.distribute)
    mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
    # Variables (model weights, optimizer slots) must be created inside the scope to be mirrored.
    with strategy.scope():
        model = build_model(
            params.architecture, params.backbone, NUM_CLASSES, 3, encoder_weights=params.encoder_weights
        )
        if params.init_weights is not None:
            _load_init_weights(model, params)
        if mixed:  # the softmax in float32: losses and their gradients need its range (weights stay float32)
            model = keras.Model(model.input, keras.layers.Activation("linear", dtype="float32")(model.output))
        lr = (
            keras.optimizers.schedules.CosineDecay(params.learning_rate, steps_per_epoch * params.epochs, alpha=0.05)
            if params.cosine_decay
            else params.learning_rate
        )
        optimizer = keras.optimizers.Adam(lr)
        loss_fn = build_loss()
        model.compile(optimizer, loss_fn, metrics=[sm.metrics.IOUScore(threshold=0.5)])
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    return model, loss_fn, checkpoint


def _load_init_weights(model: Any, params: TrainParams) -> None:
    """Set every layer from ``params.init_weights`` (a bundle JSON or a weights file of the same network)."""
    from backend.errors import LandcoverError
    from backend.models import load_weights

    path = Path(params.init_weights).expanduser()
    if not path.is_file():  # checked here, not in the config: a config may name a model another run makes
        raise TrainingError(f"init_weights {path} does not exist; train the model it names first, or set "
                            "train.init_weights=null to start from random weights")
    if path.suffix.lower() == ".json":
        from backend.bundle import load_bundle

        try:
            bundle = load_bundle(path)
        except LandcoverError as exc:
            raise TrainingError(f"init_weights {path}: {exc}") from exc
        if (bundle.architecture, bundle.backbone) != (params.architecture, params.backbone):
            raise TrainingError(f"init_weights {path} is a {bundle.architecture}/{bundle.backbone} model; this run "
                                f"trains {params.architecture}/{params.backbone}: set train.architecture and "
                                "train.backbone to match, or start from another model")
        if bundle.weights is None:
            raise TrainingError(f"init_weights {path} has no weights file (an untrained or ONNX-only bundle)")
        path = bundle.weights
    try:
        load_weights(model, path)
    except LandcoverError as exc:
        raise TrainingError(f"init_weights {path} does not fit this {params.architecture}/{params.backbone} "
                            f"network: {exc}") from exc


def _checkpoint_manager(tf: Any, checkpoint: Any, model_dir: Path, resume: bool) -> Any:
    """The manager of ``model_dir/checkpoint``, with the latest checkpoint restored when resuming.

    Raises:
        TrainingError: resuming when there is no checkpoint.
    """
    manager = tf.train.CheckpointManager(checkpoint, str(model_dir / "checkpoint"), max_to_keep=1)
    if resume:
        if manager.latest_checkpoint is None:
            raise TrainingError(f"no checkpoint in {model_dir / 'checkpoint'}; train without --resume")
        checkpoint.restore(manager.latest_checkpoint)
    return manager


def _build_datasets(
    patch_dir: Path, train_names: list[str], val_names: list[str], params: TrainParams, scale: float, epochs_done: int
) -> tuple[Any, Any]:
    """The augmented, shuffled train dataset and the plain val dataset."""
    from training.data import make_dataset

    # A new data seed per resumed epoch, so a resumed run does not replay the first epochs' batches.
    data_seed = params.seed + epochs_done
    train_ds = make_dataset(patch_dir, train_names, params.batch_size, scale, params.augment, True, data_seed)
    val_ds = make_dataset(patch_dir, val_names, params.batch_size, scale)
    return train_ds, val_ds


def _describe_run(
    patch_dir: Path,
    split_dir: Path,
    params: TrainParams,
    scale: float,
    train_count: int,
    val_count: int,
    steps_per_epoch: int,
) -> dict[str, Any]:
    """The ``train.json`` content known before training: what export needs to rebuild the model."""
    return {
        "architecture": params.architecture,
        "backbone": params.backbone,
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "input_bands": 3,
        "preprocessing": {"scale": scale, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "params": asdict(params),
        "data": {"patches": str(patch_dir), "split": str(split_dir), "train": train_count, "val": val_count},
        "steps_per_epoch": steps_per_epoch,
    }


def _write_run_files(model_dir: Path, resolved: dict[str, Any], config: dict[str, Any] | None) -> None:
    """Write ``train.json`` and, when given, the resolved ``config.yaml`` before the first epoch.

    Written up front so an interrupted run still says how it was trained.
    """
    write_text_atomic(model_dir / TRAIN_JSON, json.dumps(resolved, indent=2) + "\n")
    if config is not None:
        import yaml

        write_text_atomic(model_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def _epoch_end_callback(
    keras: Any,
    model_dir: Path,
    params: TrainParams,
    state: dict[str, Any],
    manager: Any,
    val_ds: Any,
    loss_fn: Any,
) -> Any:
    """The callback run after every epoch; it updates ``state`` in place.

    The training time it records counts from this call, on top of the time a resumed run already spent.
    """
    started = time.monotonic()
    seconds_before = float(state.get("seconds", 0.0))

    def elapsed() -> float:
        return seconds_before + time.monotonic() - started

    class EpochEnd(keras.callbacks.Callback):
        """Validate, keep the best weights, checkpoint for resume, log and plot after every epoch."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            # The val scores join Keras' own entries (loss, iou_score) so one history row holds both.
            logs = logs if logs is not None else {}
            logs.update(_validation_logs(self.model, val_ds, loss_fn, params.val_batches))
            improved = _record_epoch(self.model, model_dir, manager, state, epoch + 1, logs, elapsed)
            _print_epoch(epoch + 1, params.epochs, logs, improved)

    return EpochEnd()


def _validation_logs(model: Any, val_ds: Any, loss_fn: Any, val_batches: int | None) -> dict[str, float]:
    """Val loss, mIoU, pixel accuracy and per-class IoU as ``val_*`` log entries (NaN for an absent class)."""
    from training.metrics import scores

    cm, val_loss = evaluate_batches(model, val_ds, loss_fn, val_batches)
    result = scores(cm)
    logs = {
        "val_loss": val_loss,
        "val_miou": result["miou"] if result["miou"] is not None else 0.0,
        "val_accuracy": result["accuracy"] or 0.0,
    }
    for name in CLASS_NAMES:
        iou = result["per_class"][name]["iou"]
        logs[f"val_iou_{name}"] = iou if iou is not None else float("nan")
    return logs


def _record_epoch(
    model: Any,
    model_dir: Path,
    manager: Any,
    state: dict[str, Any],
    epoch: int,
    logs: dict[str, Any],
    elapsed: Callable[[], float],
) -> bool:
    """Save the best weights, checkpoint, state, history row and curves after the 1-based ``epoch``.

    Returns:
        Whether this epoch's val mIoU is the best so far.
    """
    from backend.models import save_weights
    from training.plots import plot_history

    improved = logs["val_miou"] > state["best_miou"]
    if improved:
        state["best_miou"], state["best_epoch"] = logs["val_miou"], epoch
        save_weights(model, model_dir / BEST_WEIGHTS, dtype="float32")
    manager.save()
    state["epoch"] = epoch
    # Timed after saving, so the recorded time includes the checkpoint writes.
    state["seconds"] = elapsed()
    write_text_atomic(model_dir / STATE_JSON, json.dumps(state, indent=2) + "\n")
    _append_history(model_dir / HISTORY_CSV, epoch, logs, state["seconds"])
    plot_history(model_dir / HISTORY_CSV, model_dir)
    return improved


def _print_epoch(epoch: int, epochs: int, logs: dict[str, Any], improved: bool) -> None:
    """One summary line per epoch (flushed, so log files follow a running job)."""
    best = " (best, saved)" if improved else ""
    print(
        f"epoch {epoch}/{epochs}: loss {logs.get('loss', float('nan')):.4f} "
        f"val_loss {logs['val_loss']:.4f} val_mIoU {logs['val_miou']:.4f}{best}",
        flush=True,
    )


def _fit(model: Any, train_ds: Any, params: TrainParams, steps: int, initial_epoch: int, callbacks: list[Any]) -> None:
    """Run Keras' fit loop from ``initial_epoch`` to ``params.epochs``; the callbacks do the reporting."""
    model.fit(
        train_ds,
        epochs=params.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=0,
    )


def _report(model_dir: Path, resolved: dict[str, Any], state: dict[str, Any]) -> TrainResult:
    """Add the outcome (best score, epochs, time) to ``train.json`` and return it as a :class:`TrainResult`."""
    resolved["best"] = {"val_miou": state["best_miou"], "epoch": state["best_epoch"]}
    resolved["epochs_done"] = state["epoch"]
    resolved["seconds"] = state["seconds"]
    write_text_atomic(model_dir / TRAIN_JSON, json.dumps(resolved, indent=2) + "\n")
    return TrainResult(
        model_dir, model_dir / BEST_WEIGHTS, state["best_miou"], state["best_epoch"], state["epoch"], state["seconds"]
    )


def _append_history(path: Path, epoch: int, logs: dict, seconds: float) -> None:
    row = {"epoch": epoch, "seconds": round(seconds, 1), **{k: _num(v) for k, v in sorted(logs.items())}}
    exists = path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def _num(v: Any) -> float:
    return round(float(v), 6)


def ProgressBar(epochs: int, steps: int) -> Any:  # noqa: N802 - a factory standing in for a class
    """A tqdm progress bar per epoch (Keras' own bar garbles log files)."""
    from tqdm import tqdm

    from backend.tf_import import import_keras

    keras = import_keras()

    class _Bar(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="step", mininterval=10, leave=False)

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.bar.close()

    return _Bar()


def read_train_json(model_dir: Path) -> dict[str, Any]:
    """The ``train.json`` of a finished run."""
    path = Path(model_dir) / TRAIN_JSON
    if not path.is_file():
        raise TrainingError(f"{path} does not exist; train a model into {model_dir} first")
    return json.loads(path.read_text())
