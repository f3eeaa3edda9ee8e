"""Synthetic style ``v5``: style ``v3`` plus shaded conifer forest, a bluish haze, housing estates, and v4's ground
without its thickets.

The best fine-tuning so far (v1 and v3 scenes, 256 px crops; ``training/reports/finetune_v4_trial.md``) still read
the deep shadows inside a dense conifer forest as water, and v4's scrub taught the models that ground dotted with
shrubs and their shadows is field, which is what open conifer forest looks like at 0.25 m. Two measurements explain
the first failure:

- in the real forest scenes the darkest quarter of the pixels is blue-black, RGB (57, 82, 110) on the Yellowstone
  road scene: bluer than it is red, because the haze between ground and camera adds most light to the blue band,
  and it shows most where the sun does not reach;
- in v3 scenes such dark, blue pixels are rare in woodland (v2's closed canopy darkens its gaps without tinting
  them), and in v1 scenes, half of every trial's data, they are all water.

This style adds, on top of every v3 painter:

- **shaded conifer forest** (woodland): on :data:`SHADED_FORESTS` of the woodland, a closed canopy of conical
  crowns of different heights, lit on the sun's side, each casting its shadow over the forest floor and the lower
  crowns beside it (a height field lit by a low sun), so that a quarter to a half of the forest is blue-black shade;
- **a bluish haze** (every class): on :data:`HAZE_SCENES` of the scenes, the light the air scatters towards the
  camera, added before the camera's own effects, most in blue; it lifts the shadows and tints them blue;
- **housing estates** (building, road): on :data:`ESTATE_SCENES` of the scenes, part of the open land becomes lawns
  with blocks of flats 15-60 m long in a rotated grid, flat roofs with parapets and rooftop kit or pitched ones,
  each casting a long blue-black shadow, and footpaths or streets with parked cars between the rows. Every earlier
  style paints farmsteads of 9-22 m houses with 1.5-3.5 m shadows, 1 % of the area; the fine-tuned models then
  found 0.1-0.4 % building on a real Zürich housing estate (``tests/data/real``), and read the blocks' shadows as
  water;
- **sparse scrub** (background): v4's scrub with small shrubs far apart (1-5 % cover instead of v4's thickets),
  in sage, olive and straw colours, not the young-pine green of a forest;
- v4's **forest-edge shadows** and **dead wood**.

Every knob is a constant below, and every draw comes from the scene's seeded generator. v3 and v4 scenes are
unchanged.
"""

from __future__ import annotations

import numpy as np

from training import synthetic_v2 as v2
from training import synthetic_v3 as v3
from training import synthetic_v4 as v4
from training.synthetic import BACKGROUND, BUILDING, ROAD, WATER, WOODLAND, value_noise

SHADED_FORESTS = 0.35  # share of scenes whose woodland is a shaded conifer forest (else v3's woodland)
CROWN_SPACING_PX = (10.0, 24.0)  # 2.5-6 m between tree tops
CROWN_RADIUS = (0.45, 0.75)  # crown radius as a share of the spacing: crowns touch and overlap
TALLEST_REACH = (0.8, 2.5)  # the shadow of the tallest crown reaches this many spacings (low sun)
FOREST_FLOORS = np.array([(70, 82, 52), (86, 84, 60), (60, 70, 50), (96, 96, 70)],
                         np.float32)  # mossy floor, litter, dark understorey, dry grass under the trees
HAZE_SCENES = 0.6  # share of scenes with a bluish haze
HAZE_LEVEL = (10.0, 80.0)  # digital numbers the haze adds to the blue band (the NEON scenes: about 80)
HAZE_TINT = np.array([0.4, 0.6, 1.0], np.float32)  # scattered skylight: most in blue, least in red
SPARSE_SPACING_PX = (12.0, 32.0)  # 3-8 m between shrubs
SPARSE_RADIUS = (0.06, 0.14)  # shrub radius as a share of the spacing: 1-5 % cover
SPARSE_COLOURS = np.array([(96, 104, 70), (110, 118, 80), (128, 124, 84), (140, 130, 96)],
                          np.float32)  # sage, olive, dry shrub, straw
ESTATE_SCENES = 0.3  # share of scenes with a housing estate on part of their open land
ESTATE_SHARE = (0.3, 0.7)  # share of the open land the estate takes
BLOCK_LENGTH_PX = (60.0, 240.0)  # blocks of flats 15-60 m long
BLOCK_WIDTH_PX = (36.0, 72.0)  # and 9-18 m deep
BLOCK_GAP_PX = ((16.0, 60.0), (40.0, 100.0))  # lawn between blocks: 4-15 m end to end, 10-25 m side to side
BLOCK_FILL = (0.5, 0.9)  # share of the grid's plots that hold a block
BLOCK_SHADOW_PX = (16.0, 64.0)  # 4-16 m: four to eight storeys under a mid to low sun
FLAT_ROOFS = 0.6  # share of blocks with a flat roof (else pitched, with a ridge)
FLAT_ROOF_COLOURS = np.array([(150, 150, 146), (190, 188, 182), (86, 86, 90), (112, 124, 84), (170, 160, 150)],
                             np.float32)  # gravel, concrete, bitumen, green roof, pale membrane
LAWN_COLOURS = np.array([(96, 130, 64), (110, 140, 70), (84, 116, 60), (124, 140, 84)], np.float32)
PAVING = np.array((176, 174, 166), np.float32)  # footpaths between the blocks (background)
ESTATE_STREETS = 0.5  # share of the rows between blocks that are streets with parked cars (road), not footpaths


def shaded_conifers(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A closed conifer canopy under a low sun: lit crown sides and deep blue-black shade between the crowns."""
    floor = FOREST_FLOORS[int(rng.integers(len(FOREST_FLOORS)))] + rng.normal(0, 6, 3)
    img = floor[None, None, :] + ((value_noise(rng, h, w, 4.0) - 0.5) * 20)[..., None]
    spacing = rng.uniform(*CROWN_SPACING_PX)
    # Conifer crowns are ragged, and grow in clumps of uneven size.
    ragged = (value_noise(rng, h, w, 2.0) - 0.5) * 0.3 + (value_noise(rng, h, w, spacing / 2) - 0.5) * 0.4
    cone = np.clip(1 - (v2.cellular(rng, h, w, spacing) + ragged) / rng.uniform(*CROWN_RADIUS), 0, 1)
    cone *= value_noise(rng, h, w, 60.0) > rng.uniform(0.0, 0.35)  # glades where the floor shows
    height = cone * (0.55 + 0.45 * value_noise(rng, h, w, spacing * 1.5))  # trees of different heights
    azimuth = rng.uniform(0, 2 * np.pi)
    away = np.sin(azimuth), np.cos(azimuth)  # shadows fall this way
    reach = max(2, int(rng.uniform(*TALLEST_REACH) * spacing))
    shade = np.zeros((h, w), bool)
    for step in range(1, reach + 1):  # shaded where a point towards the sun stands above the sun's ray
        sunward = v4._shift(height, int(round(away[0] * step)), int(round(away[1] * step)))
        shade |= sunward - step / reach > height
    facing = height - v4._shift(height, int(round(away[0] * 2)), int(round(away[1] * 2)))  # > 0: towards the sun
    crowns = cone > 0.05
    colour = v3.CONIFER_COLOURS[int(rng.integers(len(v3.CONIFER_COLOURS)))] + rng.normal(0, 8, 3)
    sunlit = np.maximum(facing, 0) * rng.uniform(60, 140)  # the far side is shaded below, not darkened here
    light = height * rng.uniform(20, 45) + sunlit + (value_noise(rng, h, w, 1.5) - 0.5) * 30
    img[crowns] = colour[None, :] + light[crowns][:, None]
    shade |= crowns & (facing < -0.02)  # a crown's far side sees only the sky, as its cast shadow does
    img[shade] *= v4.SKYLIGHT * rng.uniform(0.6, 1.2)
    return img.astype(np.float32)


def woodland(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A shaded conifer forest (:data:`SHADED_FORESTS`), else v3's closed canopy or open conifer stand."""
    if rng.random() < SHADED_FORESTS:
        return shaded_conifers(rng, h, w)
    return v3.woodland(rng, h, w)


def sparse_scrub(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """v4's scrub with small shrubs far apart, in dry colours: open ground, not a young forest (background)."""
    v4.scrub(rng, img, mask, spacing_px=SPARSE_SPACING_PX, radius=SPARSE_RADIUS, colours=SPARSE_COLOURS)


def _cell_random(rng: np.random.Generator, shape: tuple[int, int], iu: np.ndarray, iv: np.ndarray,
                 low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """One uniform draw per grid plot, looked up for every pixel (plot indices ``iu``, ``iv``)."""
    return rng.uniform(low, high, shape)[iu, iv]


def estate(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, sun: tuple[float, float],
           scenes: float = ESTATE_SCENES, length_px: tuple[float, float] = BLOCK_LENGTH_PX,
           width_px: tuple[float, float] = BLOCK_WIDTH_PX,
           gap_px: tuple[tuple[float, float], tuple[float, float]] = BLOCK_GAP_PX, grain: float = 0.0) -> None:
    """A housing estate on part of the open land: blocks of flats on lawns, with long shadows, paths and streets.

    Blocks stand in a rotated grid of plots; a block is built where its whole footprint is open land or trees, at
    least half of it in the estate. Roofs become building, streets road; lawns, paths and shadows stay
    background. ``sun`` is the scene's shadow direction (:func:`training.synthetic_v3.sun_shadow`). The keywords
    let a later style paint other estates (detached houses) or texture the roofs (``grain``: their noise amplitude).
    """
    if rng.random() >= scenes:
        return
    h, w = mask.shape
    blob = value_noise(rng, h, w, rng.uniform(200, 400))
    open_land = mask == BACKGROUND
    if not open_land.any():
        return
    region = open_land & (blob > np.quantile(blob[open_land], 1 - rng.uniform(*ESTATE_SHARE)))
    if region.mean() < 0.02:
        return
    lawn = LAWN_COLOURS[int(rng.integers(len(LAWN_COLOURS)))] + rng.normal(0, 6, 3)
    texture = (value_noise(rng, h, w, 3.0) - 0.5) * 16 + (value_noise(rng, h, w, 40.0) - 0.5) * 20
    img[region] = lawn[None, :] + texture[region][:, None]

    # Plot coordinates: u along the rows, v across them, both in pixels, origin at a random offset.
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xs * np.cos(angle) + ys * np.sin(angle) + rng.uniform(0, 500) + h + w  # (positive: plot indices >= 0)
    v = -xs * np.sin(angle) + ys * np.cos(angle) + rng.uniform(0, 500) + h + w
    length, width = rng.uniform(*length_px), rng.uniform(*width_px)
    pitch_u = length + rng.uniform(*gap_px[0])
    pitch_v = width + rng.uniform(*gap_px[1])
    iu, iv = (u // pitch_u).astype(int), (v // pitch_v).astype(int)
    du, dv = u - (iu + 0.5) * pitch_u, v - (iv + 0.5) * pitch_v  # from the plot's centre
    plots = (int(iu.max()) + 1, int(iv.max()) + 1)

    # Between two rows of plots: a footpath, or a street with cars parked along both kerbs.
    row = iv + (dv > 0)  # the gap this pixel is nearest: below its plot's centre line, or above it
    centre = pitch_v / 2 - np.abs(dv)  # distance from that gap's centre line
    street = rng.random(int(row.max()) + 1)[row] < ESTATE_STREETS
    half = np.where(street, rng.uniform(10, 16), rng.uniform(3, 6))
    lane = (centre < half) & region
    img[lane & ~street] = PAVING + rng.normal(0, 6, 3)
    img[lane & street] = v2.road_colour(rng)
    slot = (u // 20.0).astype(int)  # 5 m parking bays along the kerb
    parked = lane & street & (np.abs(half - centre - 4.5) < 3.5) & (u % 20.0 < 17)
    parked &= _cell_random(rng, (int(slot.max()) + 1, 2), slot, (dv > 0).astype(int)) < rng.uniform(0.3, 0.9)
    cars = v2.VEHICLE_COLOURS[rng.integers(len(v2.VEHICLE_COLOURS), size=int(slot.max()) + 1)]
    img[parked] = cars[slot[parked]]
    mask[lane & street] = ROAD

    # Blocks: sized per plot, built where the whole footprint is open land or trees, at least half in the estate.
    block_l = length * _cell_random(rng, plots, iu, iv, 0.6, 1.2)
    block_w = width * _cell_random(rng, plots, iu, iv, 0.85, 1.15)
    roof = (np.abs(du) <= block_l / 2) & (np.abs(dv) <= block_w / 2)
    roof &= _cell_random(rng, plots, iu, iv) < rng.uniform(*BLOCK_FILL)
    plot_id = iu * plots[1] + iv
    count = plots[0] * plots[1]
    # Never on a road, a river or a street; a block may stand where a single tree or a forest's edge was.
    spoilt = np.bincount(plot_id[roof & ~((open_land | (mask == WOODLAND)) & ~lane)], minlength=count) > 0
    inside = np.bincount(plot_id[roof & region], minlength=count) >= np.bincount(plot_id[roof], minlength=count) / 2
    roof &= inside[plot_id] & ~spoilt[plot_id]
    if roof.any():
        flat = _cell_random(rng, plots, iu, iv) < FLAT_ROOFS
        flat_colour = FLAT_ROOF_COLOURS[rng.integers(len(FLAT_ROOF_COLOURS), size=plots)][iu, iv]
        pitched_colour = v2.ROOF_COLOURS[rng.integers(len(v2.ROOF_COLOURS), size=plots)][iu, iv]
        parapet = np.minimum(block_l / 2 - np.abs(du), block_w / 2 - np.abs(dv)) < 2.0
        kit = value_noise(rng, h, w, 3.0) > 0.8  # vents, lift rooms and skylights on flat roofs
        flat_px = flat_colour + ((parapet * 25.0) + kit * rng.uniform(-40, 40))[..., None]
        ridge = np.abs(dv) < 1.5
        pitched_px = pitched_colour * np.where(dv > 0, 1.0, 0.78)[..., None] + (ridge * 25.0)[..., None]
        colours = np.where(flat[..., None], flat_px, pitched_px)
        img[roof] = colours[roof] + rng.normal(0, 4, (int(roof.sum()), 3))
        if grain:  # gravel, tiles, moss and weathering
            img[roof] += ((value_noise(rng, h, w, 1.5) - 0.5) * grain + (value_noise(rng, h, w, 12.0) - 0.5)
                          * grain)[roof][:, None]
        mask[roof] = BUILDING
        reach = rng.uniform(*BLOCK_SHADOW_PX)
        shadow = v4._swept(roof, float(np.arctan2(sun[0], sun[1])), reach) & ~roof & (mask != WATER)
        img[shadow] *= v4.SKYLIGHT * rng.uniform(0.7, 1.2)


def ground(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """v3's farm tracks, sparse scrub, then v4's forest-edge shadows and dead wood (the mask is unchanged)."""
    v3.tracks(rng, img, mask)
    sparse_scrub(rng, img, mask)
    v4.edge_shadows(rng, img, mask)
    v4.dead_wood(rng, img, mask)


def finish(rng: np.random.Generator, img: np.ndarray, haze_scenes: float = HAZE_SCENES) -> np.ndarray:
    """A bluish haze on some scenes (``haze_scenes``), then v2's camera and sensor."""
    if rng.random() < haze_scenes:
        img = img + rng.uniform(*HAZE_LEVEL) * HAZE_TINT
    return v2.finish(rng, img)
