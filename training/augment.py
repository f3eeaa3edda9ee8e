"""Augmentation applied identically to image and mask inside a ``tf.data`` pipeline.

The mask travels as an extra channel of the image through every geometric operation, so image
and mask can never drift apart. Only whole-pixel operations are used (90-degree rotations, flips,
integer shifts with reflect fill, crops), so the mask needs no interpolation at all: this is
exactly nearest-neighbour. Colour jitter (brightness, contrast, per-channel gain as a white-balance
shift, saturation) touches the image only. Random draws are stateless, seeded per sample, so an
epoch is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.errors import TrainingError


@dataclass(frozen=True)
class AugmentParams:
    """The seed's augmentation (rotations, flips, shifts) plus optional crop and colour jitter."""

    rotate: bool = True
    flip: bool = True
    shift: float = 0.1  # max shift as a fraction of the patch side, filled by reflection
    crop: int | None = None  # random crop to this side (train on smaller tiles than the patches)
    brightness: float = 0.0  # max additive brightness change on 0..1 pixels
    contrast: float = 0.0  # max relative contrast change
    # Max relative gain per colour channel: a white-balance shift, so that no class is known by one exact colour.
    white_balance: float = 0.0
    saturation: float = 0.0  # max relative change of the distance from each pixel's grey

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift < 0.5:
            raise TrainingError(f"augment shift must be in 0..0.5 (a fraction of the patch), got {self.shift}")
        if self.crop is not None and (self.crop < 32 or self.crop % 32):
            raise TrainingError(f"augment crop must be a multiple of 32, got {self.crop}")
        if not 0.0 <= self.brightness < 1.0 or not 0.0 <= self.contrast < 1.0:
            raise TrainingError("augment brightness and contrast must be in 0..1")
        if not 0.0 <= self.white_balance < 1.0 or not 0.0 <= self.saturation < 1.0:
            raise TrainingError("augment white_balance and saturation must be in 0..1")


def augment(image: Any, mask: Any, seed: Any, params: AugmentParams) -> tuple[Any, Any]:
    """Augment one ``(H, W, C)`` float image and ``(H, W)`` integer mask with a ``[2]`` int seed.

    Returns the augmented image (float32) and mask (int32), still aligned pixel for pixel.
    """
    from backend.tf_import import import_tensorflow

    tf = import_tensorflow()
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    channels = tf.shape(image)[-1]
    stack = tf.concat([tf.cast(image, tf.float32), tf.cast(mask, tf.float32)[..., None]], axis=-1)
    if params.crop:
        stack = tf.image.stateless_random_crop(stack, [params.crop, params.crop, tf.shape(stack)[-1]], seeds[0])
    if params.rotate:
        k = tf.random.stateless_uniform([], seeds[1], 0, 4, dtype=tf.int32)
        stack = tf.image.rot90(stack, k)
    if params.flip:
        stack = tf.image.stateless_random_flip_left_right(stack, seeds[2])
        stack = tf.image.stateless_random_flip_up_down(stack, seeds[3])
    if params.shift > 0:
        shape = tf.shape(stack)
        pad = int(round(params.shift * (params.crop or 0))) if params.crop else None
        if pad is None:
            pad = tf.cast(tf.round(params.shift * tf.cast(shape[0], tf.float32)), tf.int32)
        padded = tf.pad(stack, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        stack = tf.image.stateless_random_crop(padded, shape, seeds[4])
    image_out = stack[..., :channels]
    mask_out = tf.cast(tf.round(stack[..., channels]), tf.int32)
    if params.brightness > 0 or params.contrast > 0:
        jitter = tf.random.stateless_uniform([2], seeds[5], -1.0, 1.0)
        mean = tf.reduce_mean(image_out, axis=[0, 1], keepdims=True)
        image_out = (image_out - mean) * (1.0 + params.contrast * jitter[0]) + mean + params.brightness * jitter[1]
    if params.white_balance > 0 or params.saturation > 0:
        # Split from the brightness seed rather than drawing more seeds above, so that runs without these two
        # knobs get exactly the augmentation they always had.
        colour_seeds = tf.random.experimental.stateless_split(seeds[5], num=2)
        gains = 1.0 + params.white_balance * tf.random.stateless_uniform([channels], colour_seeds[0], -1.0, 1.0)
        image_out = image_out * gains
        grey = tf.reduce_mean(image_out, axis=-1, keepdims=True)
        factor = 1.0 + params.saturation * tf.random.stateless_uniform([], colour_seeds[1], -1.0, 1.0)
        image_out = grey + (image_out - grey) * factor
    return image_out, mask_out
