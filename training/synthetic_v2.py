"""Synthetic style ``v2``: more of the real world's variety, so a model trained on it is fooled less by real photos.

The first style painted woodland as one green noise texture and roofs as flat coloured blocks, so "dark and
compact" meant building on real imagery (oak crowns, paint strokes) and brown water meant field. This style
keeps the scene layout (:func:`training.synthetic.generate_scene`) and changes how each class looks:

- **woodland**: individual crowns with sunlit and shaded sides and cast shadows, in the colours real canopies
  take (dark and blue-green, olive, purple-grey in shade, autumn, leaf-off); single trees are also scattered
  over fields and dry grass (woodland in the mask, as LandCover.ai labels tree groups);
- **fields** (background): besides crops and meadows, dry grass, bare soil, rocky ground, shrubland and
  strong crop rows;
- **water**: clear, dark, turbid green and muddy brown, with wind waves and sun glint on some scenes; a quarter
  of the scenes are riverfronts, a river 25-60 % of the scene wide;
- **roads**: dark and light asphalt, concrete, gravel and dirt, with vehicles and lane markings;
- **clutter** that keeps the class below it: vehicles, tarps and machinery in saturated colours, and paint or
  tyre marks on fields (so "small and saturated" does not mean building);
- **roofs**: red and brown tiles, dark and light grey, white, metal, blue and green;
- **camera**: exposure (gamma), white balance, haze, a source pixel size between 0.2 and 0.5 m resampled to the
  model's 0.25 m, blur of varying strength, sensor noise and JPEG artefacts.

Every random choice comes from the scene's seeded generator; the knobs are the constants below.
"""

from __future__ import annotations

import io

import numpy as np

from training.synthetic import WOODLAND, _fields, value_noise

FIELD_COLOURS = np.array(
    [
        (96, 132, 64), (120, 150, 80), (196, 184, 120), (170, 160, 110), (140, 112, 86), (118, 98, 78),
        (150, 162, 108), (175, 170, 140),  # the v1 crops, soils and meadows
        (200, 186, 142),  # dry grass
        (160, 134, 102),  # bare soil
        (168, 163, 152),  # rocky ground
        (132, 124, 92),  # shrubland
        (86, 112, 58),  # dark meadow
        (104, 140, 70),  # crop rows (strong stripes)
        (178, 174, 166),  # pale bare strip, tyre tracks
    ],
    np.float32,
)
MAX_STRIPES = 40.0  # crop-row contrast up to this (v1: 16)
CANOPY_COLOURS = np.array(
    [(34, 60, 30), (40, 70, 62), (70, 86, 46), (52, 74, 52), (72, 68, 80), (150, 108, 52), (112, 102, 92)],
    np.float32,  # dark green, blue-green, olive, mid green, purple-grey shade, autumn, leaf-off
)
CANOPY_WEIGHTS = np.array([0.24, 0.16, 0.16, 0.2, 0.1, 0.07, 0.07])
WATER_COLOURS = np.array([(36, 56, 76), (30, 40, 46), (70, 88, 62), (112, 96, 70), (96, 88, 66), (120, 104, 72),
                          (88, 84, 60)], np.float32)  # clear, dark, turbid green, muddy browns, olive silt
WIDE_RIVER = 0.25  # share of scenes that are riverfronts
GSD_RANGE_M = (0.2, 0.5)  # source pixel sizes imitated by resampling to 0.25 m
VEHICLE_COLOURS = np.array([(230, 230, 232), (20, 20, 24), (200, 30, 30), (30, 60, 190), (150, 150, 156),
                            (220, 200, 40), (40, 150, 60), (230, 120, 30)], np.float32)
MARK_COLOURS = np.array([(220, 30, 40), (30, 50, 220), (40, 200, 60), (240, 240, 240), (240, 200, 30),
                         (60, 40, 30)], np.float32)  # paint, tarps, tyre ruts
ROAD_COLOURS = np.array([(70, 70, 74), (120, 120, 124), (182, 180, 174), (172, 160, 140), (150, 126, 98)],
                        np.float32)  # dark asphalt, light asphalt, concrete, gravel, dirt
ROOF_COLOURS = np.array(
    [(168, 72, 56), (186, 96, 70), (120, 86, 70), (92, 90, 96), (50, 50, 56), (200, 198, 190), (224, 222, 214),
     (170, 176, 182), (62, 90, 140), (70, 110, 82)],
    np.float32,
)


def fields(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _fields(rng, h, w, FIELD_COLOURS, MAX_STRIPES)


def cellular(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Distance (in cells) from each pixel to the nearest of jittered points, one per ``cell``-sized square.

    Thresholded and inverted it gives packed round blobs with gaps between them: tree crowns.
    """
    gh, gw = int(h // cell) + 3, int(w // cell) + 3
    points = (np.mgrid[0:gh, 0:gw].transpose(1, 2, 0) + rng.random((gh, gw, 2))) * cell  # (y, x) per cell
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    iy, ix = (ys // cell).astype(np.int32) + 1, (xs // cell).astype(np.int32) + 1
    best = np.full((h, w), np.inf, np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            p = points[iy + dy - 1, ix + dx - 1]
            np.minimum(best, np.hypot(p[..., 0] - cell - ys, p[..., 1] - cell - xs), out=best)
    return best / cell


def _crowns(rng: np.random.Generator, h: int, w: int, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Crown height (0..1) and its shading: lit towards the sun, shaded away, with a cast shadow beside."""
    crown = np.clip(1 - cellular(rng, h, w, cell) / rng.uniform(0.55, 0.8), 0, 1) ** 0.7
    sun = rng.uniform(0, 2 * np.pi)
    dy, dx = int(round(np.sin(sun) * cell / 3)), int(round(np.cos(sun) * cell / 3))
    shifted = np.roll(np.roll(crown, dy, axis=0), dx, axis=1)
    return crown, crown - shifted  # > 0 on the sunlit side, < 0 in the shade and the cast shadow


def woodland(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = CANOPY_COLOURS[rng.choice(len(CANOPY_COLOURS), p=CANOPY_WEIGHTS)] + rng.normal(0, 6, 3)
    cell = rng.uniform(8, 20)  # crown spacing: 2-5 m at 0.25 m/px
    crown, shade = _crowns(rng, h, w, cell)
    fine = value_noise(rng, h, w, 3.0) - 0.5  # leaves and twigs
    stand = value_noise(rng, h, w, 150.0) - 0.5  # stands of different species and age
    light = crown * rng.uniform(40, 70) + shade * rng.uniform(25, 50) + fine * 10 + stand * 20 - 30
    img = base[None, None, :] + light[..., None]
    gaps = crown < rng.uniform(0.05, 0.2)  # ground and deep shadow between crowns
    img[gaps] *= rng.uniform(0.4, 0.65)
    return img.astype(np.float32)


def scatter_trees(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, allowed: np.ndarray,
                  canopy) -> None:
    """Single crowns over fields (on about half the scenes), with shadows that stay background."""
    if rng.random() < 0.5:
        return
    h, w = mask.shape
    texture = canopy(rng, h, w)
    count = int(rng.integers(20, 200) * h * w / 1024 ** 2)
    ys, xs = np.mgrid[0:h, 0:w]
    sun = rng.uniform(0, 2 * np.pi)
    for _ in range(count):
        r = rng.uniform(6, 22)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1, x0, x1 = (max(0, int(cy - r - 12)), min(h, int(cy + r + 12)), max(0, int(cx - r - 12)),
                          min(w, int(cx + r + 12)))
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = ys[y0:y1, x0:x1], xs[y0:y1, x0:x1]
        d = np.hypot(yy - cy, xx - cx) / r
        crown = (d < 1) & allowed[y0:y1, x0:x1]
        sy, sx = cy + np.sin(sun) * r * 0.6, cx + np.cos(sun) * r * 0.6
        shadow = (np.hypot(yy - sy, xx - sx) / r < 1) & ~crown & allowed[y0:y1, x0:x1]
        window = img[y0:y1, x0:x1]
        window[shadow] *= 0.55
        window[crown] = texture[y0:y1, x0:x1][crown] * (1.1 - 0.35 * d[crown])[:, None]
        mask[y0:y1, x0:x1][crown] = WOODLAND


def water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = WATER_COLOURS[int(rng.integers(len(WATER_COLOURS)))] + rng.normal(0, 6, 3)
    slow = (value_noise(rng, h, w, 200.0) - 0.5) * 30
    ripple = (value_noise(rng, h, w, 3.0) - 0.5) * rng.uniform(4, 14)
    # Wind waves: fine crests across the wind, broken up by noise.
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period + value_noise(rng, h, w, 12.0) * 6
    waves = np.sin(phase) * (value_noise(rng, h, w, 40.0) * rng.uniform(0, 12))
    img = base[None, None, :] + (slow + ripple + waves)[..., None]
    if rng.random() < 0.4:  # sun glint: sparse bright speckles on the wave crests
        glint = value_noise(rng, h, w, 2.0) + 0.1 * np.sin(phase)
        img += (np.clip(glint - 0.85, 0, None) * 600)[..., None]
    return img.astype(np.float32)


def road_colour(rng: np.random.Generator) -> np.ndarray:
    return ROAD_COLOURS[int(rng.integers(len(ROAD_COLOURS)))] + rng.normal(0, 6, 3).astype(np.float32)


def _stroke(img: np.ndarray, mask: np.ndarray, allowed: int, colour: np.ndarray, points: np.ndarray,
            half: float) -> None:
    """Paint a polyline of ``half`` width over the pixels of class ``allowed`` only (the mask is unchanged)."""
    from training.synthetic import _paint_polyline

    y0, x0 = np.floor(points.min(axis=0) - half - 2).astype(int)
    y1, x1 = np.ceil(points.max(axis=0) + half + 3).astype(int)
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, mask.shape[0]), min(x1, mask.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    hit = np.zeros((y1 - y0, x1 - x0), bool)
    _paint_polyline(hit, points - np.array([y0, x0]), half)
    hit &= mask[y0:y1, x0:x1] == allowed
    img[y0:y1, x0:x1][hit] = colour


def clutter(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray,
            road_lines: list[tuple[np.ndarray, float]]) -> None:
    """Small things that keep the class below: vehicles and lane marks on roads, paint, tarps and ruts on fields."""
    from training.synthetic import BACKGROUND, ROAD

    h, w = mask.shape
    scale = h * w / 1024 ** 2
    for line, _half in road_lines:
        if rng.random() < 0.5:  # dashed centre line
            for a, b in zip(line[:-1:2], line[1::2], strict=False):
                _stroke(img, mask, ROAD, np.full(3, rng.uniform(200, 240), np.float32), np.array([a, (a + b) / 2]),
                        0.8)
    road_pixels = np.argwhere(mask == ROAD)
    if len(road_pixels):
        for cy, cx in road_pixels[rng.integers(len(road_pixels), size=int(rng.integers(0, 60) * scale))]:
            angle = rng.uniform(0, np.pi)  # a car: 4.5 x 1.8 m
            d = np.array([np.sin(angle), np.cos(angle)]) * rng.uniform(6, 10)
            colour = VEHICLE_COLOURS[int(rng.integers(len(VEHICLE_COLOURS)))] + rng.normal(0, 8, 3)
            _stroke(img, mask, ROAD, colour, np.array([(cy, cx) - d, (cy, cx) + d]), rng.uniform(2.5, 4))
    for _ in range(int(rng.integers(0, 40) * scale)):  # paint strokes, tarps, machinery, ruts on fields
        start = rng.uniform(0, (h, w))
        steps = rng.normal(0, 1, (int(rng.integers(2, 8)), 2)).cumsum(axis=0) * rng.uniform(4, 20)
        colour = MARK_COLOURS[int(rng.integers(len(MARK_COLOURS)))] + rng.normal(0, 10, 3)
        _stroke(img, mask, BACKGROUND, colour, np.vstack([start, start + steps]), rng.uniform(1, 5))


def resample(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Lose the detail of a source pixel size drawn from :data:`GSD_RANGE_M`, resampled back to 0.25 m.

    Sizes under 0.25 m keep the painted detail (downsampling a sharper source loses nothing painted here).
    """
    from PIL import Image

    factor = rng.uniform(*GSD_RANGE_M) / 0.25
    if factor <= 1.0:
        return img
    h, w, _ = img.shape
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    out = np.empty_like(img)
    for b in range(3):
        band = Image.fromarray(img[..., b].astype(np.float32), mode="F")
        out[..., b] = np.asarray(band.resize(small, Image.BOX).resize((w, h), Image.BILINEAR))
    return out


def finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Camera and sensor: light falloff, exposure, white balance, haze, resampling, blur, noise, JPEG."""
    h, w, _ = img.shape
    img = img * (0.88 + 0.24 * value_noise(rng, h, w, max(h, w) / 2))[..., None]
    img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32)  # white balance
    img = 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(0.8, 1.25)  # exposure
    haze = rng.uniform(0, 0.25)
    img = img * (1 - haze) + haze * rng.uniform(150, 210)
    img = resample(rng, img)
    for _ in range(int(rng.integers(0, 3))):  # [1, 2, 1] blur, 0 to 2 passes
        b = img.copy()
        b[1:-1] = (img[:-2] + 2 * img[1:-1] + img[2:]) / 4
        img = b.copy()
        img[:, 1:-1] = (b[:, :-2] + 2 * b[:, 1:-1] + b[:, 2:]) / 4
    img = img + rng.normal(0, rng.uniform(1, 6), img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:  # JPEG, as many orthophoto services deliver them
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(40, 90)))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()
    return out
