"""Synthetic style ``v4``: style ``v3`` plus rough open ground, the shade of forest edges and dead wood.

A model fine-tuned on v1 and v3 (run v3c, ``training/reports/finetune_v3_trial.md``) found roads, the river and
open conifer stands, but called most real textured ground "road": 86 % of young pines over sand, 45 % of a meadow
with conifer stands. In v3 the only open land with bright and dark spots at a metre's scale is a road with cars and
markings; real open land has plenty. The earlier models read the long shadows of forest edges on grass as water.
This style adds, on top of every v3 painter, and all of it over open land or woodland (the mask is unchanged):

- **scrub** (background): on some scenes, patches of pale sand or leaf litter with fine grain, dotted with shrubs
  and young trees 0.5-2 m across, each with a blue-black shadow;
- **forest-edge shadows** (background): the shade a forest edge casts over the open land beside it, 2-15 m
  deep and ragged as the crowns that cast it;
- **dead wood** (the class below): fallen trunks, pale grey and 0.4-1.1 m thick, each with its thin shadow, and
  snags, grey starbursts of dead branches with a long thin shadow, over fields and in woodland.

Every knob is a constant below, and every draw comes from the scene's seeded generator. v3 scenes are unchanged.
"""

from __future__ import annotations

import numpy as np

from training import synthetic_v2 as v2
from training import synthetic_v3 as v3
from training.synthetic import BACKGROUND, WATER, WOODLAND, value_noise

SCRUB_SCENES = 0.5  # share of scenes with scrub on part of their open land
SCRUB_SHARE = (0.15, 0.6)  # share of the open land that is scrub, in those scenes
GROUND_COLOURS = np.array([(214, 204, 178), (196, 178, 146), (168, 150, 122), (150, 146, 132), (188, 170, 140),
                           (176, 168, 150)], np.float32)  # pale sand, tan sand, brown litter, grey litter, dust, ash
SHRUB_COLOURS = np.array([(58, 80, 40), (80, 96, 52), (96, 104, 70), (50, 66, 48), (110, 118, 80)],
                         np.float32)  # young pine, shrub green, sage, dark evergreen, olive
SHRUB_SPACING_PX = (6.0, 16.0)  # 1.5-4 m between shrubs
EDGE_SHADOW_SCENES = 0.6  # share of scenes whose forest edges cast shade over the open land
EDGE_SHADOW_PX = (8, 60)  # how far the shade reaches: 2-15 m (tall trees, low sun)
TRUNKS = (0, 80)  # fallen trunks per 1024 px scene
TRUNK_HALF_PX = (0.8, 2.2)  # 0.4-1.1 m thick
TRUNK_LENGTH_PX = (20.0, 100.0)  # 5-25 m long
SNAGS = (0, 40)  # standing dead trees per 1024 px scene
SNAG_RADIUS_PX = (5.0, 14.0)  # dead crown radius, 1.2-3.5 m
SKYLIGHT = v3.SKYLIGHT.astype(np.float32)  # shadows as v3's (float32: the runs on v4 were painted so)


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved by ``(dy, dx)`` pixels, filled with False (no wrap-around, unlike ``np.roll``)."""
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h - max(dy, 0),
                                                                  max(-dx, 0):w - max(dx, 0)]
    return out


def _swept(region: np.ndarray, azimuth: float, reach: float, ragged: np.ndarray | None = None) -> np.ndarray:
    """Where ``region`` casts its shadow: ``region`` swept ``reach`` pixels away from a sun at ``azimuth``.

    With ``ragged`` (0..1 per pixel) a pixel at ``step`` from the caster is shaded only where ``ragged`` exceeds
    ``step / reach``, so the shadow's far edge is as uneven as the crowns that cast it.
    """
    out = np.zeros_like(region)
    for step in range(1, int(reach) + 1):
        moved = _shift(region, int(round(np.sin(azimuth) * step)), int(round(np.cos(azimuth) * step)))
        out |= moved if ragged is None else moved & (ragged > step / reach)
    return out


def scrub(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray,
          spacing_px: tuple[float, float] = SHRUB_SPACING_PX, radius: tuple[float, float] = (0.2, 0.5),
          colours: np.ndarray = SHRUB_COLOURS) -> None:
    """Patches of sand or litter dotted with shrubs and young trees and their shadows (background).

    ``radius`` is the shrubs' radius as a share of their ``spacing_px``; style v5 paints sparser, smaller ones.
    """
    if rng.random() >= SCRUB_SCENES:
        return
    h, w = mask.shape
    open_land = mask == BACKGROUND
    if not open_land.any():
        return
    patches = value_noise(rng, h, w, rng.uniform(100, 300))
    region = open_land & (patches > np.quantile(patches[open_land], 1 - rng.uniform(*SCRUB_SHARE)))
    ground = GROUND_COLOURS[int(rng.integers(len(GROUND_COLOURS)))] + rng.normal(0, 8, 3)
    grain = (value_noise(rng, h, w, 1.5) - 0.5) * rng.uniform(20, 50) + (value_noise(rng, h, w, 5.0) - 0.5) * 24
    out = ground[None, None, :] + grain[..., None]
    spacing = rng.uniform(*spacing_px)
    crown = np.clip(1 - v2.cellular(rng, h, w, spacing) / rng.uniform(*radius), 0, 1)
    crown *= value_noise(rng, h, w, 40.0) > rng.uniform(0.0, 0.6)  # bare openings between thickets
    shrubs = crown > 0.05
    shadow = _swept(shrubs, rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0) * spacing) & ~shrubs
    out[shadow] *= SKYLIGHT * rng.uniform(0.7, 1.2)
    colour = colours[int(rng.integers(len(colours)))] + rng.normal(0, 8, 3)
    out[shrubs] = colour + (crown[shrubs] * rng.uniform(20, 50) + grain[shrubs] * 0.6)[:, None]
    img[region] = out[region]


def edge_shadows(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """The shade of forest edges over the open land beside them (background stays background)."""
    if rng.random() >= EDGE_SHADOW_SCENES:
        return
    h, w = mask.shape
    ragged = 0.5 + 0.5 * value_noise(rng, h, w, rng.uniform(4, 12))  # the near half of the reach is always shaded
    shade = _swept(mask == WOODLAND, rng.uniform(0, 2 * np.pi), rng.uniform(*EDGE_SHADOW_PX), ragged)
    shade &= mask == BACKGROUND
    img[shade] *= SKYLIGHT * rng.uniform(0.6, 1.1)


def _shadow_grey(rng: np.random.Generator) -> np.ndarray:
    """The colour of a thin shadow on the ground: dark and bluish (:data:`SKYLIGHT`)."""
    return np.full(3, rng.uniform(25, 60), np.float32) * SKYLIGHT / SKYLIGHT.max()


def _wood_grey(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Weathered wood: a grey between ``low`` and ``high`` with a slight tint."""
    return np.full(3, rng.uniform(low, high), np.float32) + rng.normal(0, 6, 3).astype(np.float32)


def dead_wood(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """Fallen trunks and snags, with their shadows, over fields and woodland (never water; mask unchanged)."""
    h, w = mask.shape
    scale = h * w / 1024 ** 2
    sun = rng.uniform(0, 2 * np.pi)
    away = np.array([np.sin(sun), np.cos(sun)])  # shadows fall this way
    for _ in range(int(rng.integers(*TRUNKS) * scale + rng.random())):
        start = rng.uniform(0, (h, w))
        cls = int(mask[int(start[0]), int(start[1])])
        if cls == WATER:
            continue
        turn = rng.uniform(0, 2 * np.pi)
        points = np.vstack([start, start + np.array([np.sin(turn), np.cos(turn)]) * rng.uniform(*TRUNK_LENGTH_PX)])
        half = rng.uniform(*TRUNK_HALF_PX)
        v2._stroke(img, mask, cls, _shadow_grey(rng), points + away * (half + 1.0), half)
        v2._stroke(img, mask, cls, _wood_grey(rng, 150, 225), points, half)
    for _ in range(int(rng.integers(*SNAGS) * scale + rng.random())):
        centre = rng.uniform(0, (h, w))
        cls = int(mask[int(centre[0]), int(centre[1])])
        if cls == WATER:
            continue
        radius = rng.uniform(*SNAG_RADIUS_PX)
        v2._stroke(img, mask, cls, _shadow_grey(rng), np.vstack([centre, centre + away * radius * rng.uniform(2, 4)]),
                   rng.uniform(0.8, 1.5))
        grey = _wood_grey(rng, 140, 215)
        for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(6, 13))):
            tip = centre + np.array([np.sin(angle), np.cos(angle)]) * radius * rng.uniform(0.5, 1.0)
            v2._stroke(img, mask, cls, grey, np.vstack([centre, tip]), rng.uniform(0.5, 0.9))


def ground(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """v3's farm tracks, then scrub, forest-edge shadows and dead wood (the mask is unchanged)."""
    v3.tracks(rng, img, mask)
    scrub(rng, img, mask)
    edge_shadows(rng, img, mask)
    dead_wood(rng, img, mask)
