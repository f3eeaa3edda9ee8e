"""Reading patches: a ``tf.data`` pipeline for training and plain numpy for evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training import NUM_CLASSES
from training.augment import AugmentParams, augment
from training.errors import TrainingError


def patch_paths(patch_dir: Path, name: str) -> tuple[Path, Path]:
    """Image and mask PNG of one patch."""
    return Path(patch_dir) / "images" / f"{name}.png", Path(patch_dir) / "masks" / f"{name}.png"


def check_patches_exist(patch_dir: Path, names: list[str]) -> None:
    """Fail early (not deep inside tf.data) when a listed patch is missing."""
    for name in names:
        for path in patch_paths(patch_dir, name):
            if not path.is_file():
                raise TrainingError(f"patch file {path} is missing; re-run the patch step or fix the split lists")


def load_patch(patch_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (H, W, 3), mask uint8 (H, W))`` of one patch."""
    from PIL import Image

    image_path, mask_path = patch_paths(patch_dir, name)
    return np.asarray(Image.open(image_path).convert("RGB")), np.asarray(Image.open(mask_path))


def make_dataset(
    patch_dir: Path,
    names: list[str],
    batch_size: int,
    scale: float = 255.0,
    augment_params: AugmentParams | None = None,
    training: bool = False,
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
) -> Any:
    """Batches of ``(image float32 /scale, one-hot mask)``.

    With ``training``: shuffled every epoch, augmented, repeated forever (so every batch is full
    and ``steps_per_epoch`` sets the epoch length). Otherwise one ordered pass.
    """
    from backend.tf_import import import_tensorflow

    tf = import_tensorflow()
    images = [str(patch_paths(patch_dir, n)[0]) for n in names]
    masks = [str(patch_paths(patch_dir, n)[1]) for n in names]
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if training:
        ds = ds.shuffle(len(names), seed=seed, reshuffle_each_iteration=True).repeat()

    def load(image_path: Any, mask_path: Any) -> tuple[Any, Any]:
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0]
        return tf.cast(image, tf.float32) / scale, tf.cast(mask, tf.int32)

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment_params is not None:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        # augment() has no tensor-dependent Python control flow, so AutoGraph has nothing to convert.
        fn = tf.autograph.experimental.do_not_convert(lambda pair, s: augment(pair[0], pair[1], s, augment_params))
        ds = tf.data.Dataset.zip((ds, seeds)).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)
