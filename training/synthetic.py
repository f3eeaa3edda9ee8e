"""A deterministic synthetic LandCover.ai-like dataset (orthophotos + masks as GeoTIFFs).

Each scene is painted in class priority order: fields (background), woodland, water, roads,
buildings (with shadows, which stay background). Shares are steered to a target per class, with
per-scene jitter, so a set of scenes averages roughly LandCover.ai's class balance. Everything is
vectorised numpy; a 2048 x 2048 scene takes 2-3 s on one CPU core.

Layout written (the LandCover.ai v1 layout): ``OUT/images/NAME.tif`` (RGB uint8) and
``OUT/masks/NAME.tif`` (uint8 class ids 0..4), EPSG:2180 at 0.25 m/px.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from backend.contract import atomic_path
from training.errors import TrainingError

BACKGROUND, BUILDING, WOODLAND, WATER, ROAD = range(5)
GSD_M = 0.25
CRS = "EPSG:2180"
STYLES = ("v1", "v2", "v3", "v4", "v5", "v6")  # how classes are painted: see painters()
MIXES = {"mixed": ("v1", "v2")}  # named cycles of styles; a comma list such as "v1,v1,v3" is a cycle too
SOUTH_EAST = (1.0, 0.8)  # v1 and v2 cast every building shadow this way (dy, dx per pixel of shift)


@dataclass(frozen=True)
class ClassShares:
    """Target share of the scene area per foreground class; background takes the rest."""

    building: float = 0.009
    woodland: float = 0.33
    water: float = 0.06
    road: float = 0.016

    def __post_init__(self) -> None:
        values = (self.building, self.woodland, self.water, self.road)
        if any(not 0.0 <= v < 1.0 for v in values):
            raise TrainingError(f"class shares must be in 0..1, got {values}")
        if sum(values) >= 0.95:
            raise TrainingError(f"foreground shares add up to {sum(values):.2f}; leave at least 5 % background")


@dataclass(frozen=True)
class SyntheticParams:
    """How many scenes, how big, which seed, which class balance."""

    orthophotos: int = 8
    size: int = 2048
    seed: int = 0
    shares: ClassShares = field(default_factory=ClassShares)
    jitter: float = 0.35  # relative per-scene variation of each share, so scenes differ in composition
    prefix: str = "synthetic"
    style: str = "v1"  # how classes are painted: v1 (the first generator), v2 (varied; training/synthetic_v2.py),
    # v3 (v2 and what real scenes still misread; training/synthetic_v3.py), or a cycle of them: mixed (even-numbered
    # scenes v1, odd ones v2) or a comma list, e.g. "v1,v1,v3" (scene i takes the (i mod 3)-th)

    def __post_init__(self) -> None:
        if self.orthophotos < 1:
            raise TrainingError(f"--orthophotos must be >= 1, got {self.orthophotos}")
        if self.size < 64:
            raise TrainingError(f"--size must be >= 64 pixels, got {self.size}")
        if not 0.0 <= self.jitter < 1.0:
            raise TrainingError(f"jitter must be in 0..1, got {self.jitter}")
        style_cycle(self.style)


def style_cycle(style: str) -> tuple[str, ...]:
    """The styles the scenes of a dataset of ``style`` take in turn (one for a plain style)."""
    cycle = MIXES.get(style) or tuple(part.strip() for part in style.split(","))
    if not all(part in STYLES for part in cycle):
        raise TrainingError(f"synthetic style must be one of {', '.join(STYLES)}, {', '.join(MIXES)}, or a comma "
                            f"list of styles such as v1,v1,v3; got {style!r}")
    return cycle


# ----------------------------------------------------------------------------------------------- noise


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in 0..1 with features about ``cell`` pixels wide (bilinear, smoothstep-eased)."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int32), xs.astype(np.int32)
    fy, fx = ys - y0, xs - x0
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def fbm(rng: np.random.Generator, h: int, w: int, cells: tuple[float, ...]) -> np.ndarray:
    """Sum of octaves of value noise (largest first, halving weights), normalised to 0..1."""
    out = np.zeros((h, w), np.float32)
    weight, total = 1.0, 0.0
    for cell in cells:
        out += weight * value_noise(rng, h, w, cell)
        total += weight
        weight *= 0.5
    return out / total


def _threshold_for_share(field_: np.ndarray, share: float, allowed: np.ndarray | None = None) -> float:
    """The value above which ``share`` of the (allowed) pixels of ``field_`` lie; sampled for speed."""
    sample = field_[::4, ::4]
    if allowed is not None:
        sample = sample[allowed[::4, ::4]]
    if share <= 0 or sample.size == 0:
        return math.inf
    return float(np.quantile(sample, 1.0 - min(share, 1.0)))


# ----------------------------------------------------------------------------------------------- geometry


def _segment_distance(y0: float, x0: float, y1: float, x1: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Distance of each (ys, xs) grid point to the segment (y0, x0)-(y1, x1)."""
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx or 1e-9
    t = np.clip(((ys - y0) * dy + (xs - x0) * dx) / length2, 0.0, 1.0)
    return np.hypot(ys - (y0 + t * dy), xs - (x0 + t * dx))


def _paint_polyline(
    mask: np.ndarray, points: np.ndarray, half_width: float, dist_out: np.ndarray | None = None
) -> None:
    """Set ``mask`` True within ``half_width`` of the polyline; optionally keep the min distance."""
    h, w = mask.shape
    pad = half_width + 2
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:], strict=False):
        r0, r1 = int(max(min(y0, y1) - pad, 0)), int(min(max(y0, y1) + pad + 1, h))
        c0, c1 = int(max(min(x0, x1) - pad, 0)), int(min(max(x0, x1) + pad + 1, w))
        if r0 >= r1 or c0 >= c1:
            continue
        ys = np.arange(r0, r1, dtype=np.float32)[:, None]
        xs = np.arange(c0, c1, dtype=np.float32)[None, :]
        d = _segment_distance(y0, x0, y1, x1, ys, xs)
        mask[r0:r1, c0:c1] |= d <= half_width
        if dist_out is not None:
            np.minimum(dist_out[r0:r1, c0:c1], d, out=dist_out[r0:r1, c0:c1])


def _wandering_line(rng: np.random.Generator, h: int, w: int, bend: float, n: int = 12) -> np.ndarray:
    """A gently curving polyline crossing the scene from one edge to another, as (y, x) points."""
    def edge_point(side: int) -> tuple[float, float]:
        t = rng.uniform(0.1, 0.9)
        return [(0.0, t * w), (h - 1.0, t * w), (t * h, 0.0), (t * h, w - 1.0)][side]

    side_a = int(rng.integers(4))
    side_b = int(rng.choice([s for s in range(4) if s != side_a]))
    a, b = np.array(edge_point(side_a)), np.array(edge_point(side_b))
    # Extend beyond the scene so the line does not visibly stop at the edge.
    direction = (b - a) / (np.linalg.norm(b - a) + 1e-9)
    a, b = a - direction * 64, b + direction * 64
    t = np.linspace(0.0, 1.0, n)[:, None]
    points = a + t * (b - a)
    normal = np.array([-direction[1], direction[0]])
    phase, periods = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.5)
    offset = bend * np.sin(2 * np.pi * periods * t[:, 0] + phase) + rng.normal(0, bend * 0.15, n)
    return points + offset[:, None] * normal[None, :]


# ----------------------------------------------------------------------------------------------- layers


FIELD_COLOURS = np.array(
    [
        (96, 132, 64),  # green crop
        (120, 150, 80),  # young cereal
        (196, 184, 120),  # ripe cereal
        (170, 160, 110),  # stubble
        (140, 112, 86),  # ploughed soil
        (118, 98, 78),  # wet soil
        (150, 162, 108),  # meadow
        (175, 170, 140),  # dry grass
    ],
    np.float32,
)


def _fields(rng: np.random.Generator, h: int, w: int, palette: np.ndarray = FIELD_COLOURS,
            max_stripes: float = 16.0) -> np.ndarray:
    """Background: agricultural parcels with per-parcel colour and ploughing stripes, as float RGB."""
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    diag = float(h + w)
    strip_edges = np.cumsum(rng.uniform(80, 500, 64)) - diag
    cut_edges = np.cumsum(rng.uniform(100, 700, 64)) - diag
    strip = np.searchsorted(strip_edges, u).astype(np.int32)
    strip_shift = rng.uniform(0, 600, strip_edges.size + 1).astype(np.float32)
    cut = np.searchsorted(cut_edges, v + strip_shift[strip]).astype(np.int32)
    parcel = strip * (cut_edges.size + 1) + cut
    n = (strip_edges.size + 1) * (cut_edges.size + 1)
    kind = rng.integers(0, len(palette), n)
    colour = palette[kind] + rng.normal(0, 10, (n, 3)).astype(np.float32)
    period = rng.uniform(5, 18, n).astype(np.float32)
    amplitude = rng.uniform(0, max_stripes, n).astype(np.float32) * (rng.random(n) < 0.7)
    along_u = rng.random(n) < 0.5
    coord = np.where(along_u[parcel], u, v)
    stripes = np.sin(2 * np.pi * coord / period[parcel]) * amplitude[parcel]
    texture = (fbm(rng, h, w, (48.0, 12.0, 3.0)) - 0.5) * 36
    img = colour[parcel] + (stripes + texture)[..., None]
    # Field margins: thin lighter/darker boundaries between parcels.
    edge = np.zeros((h, w), bool)
    edge[1:, :] |= parcel[1:, :] != parcel[:-1, :]
    edge[:, 1:] |= parcel[:, 1:] != parcel[:, :-1]
    img[edge] = img[edge] * 0.85 + 20
    return img


def _woodland_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Canopy: dark greens with bright sunlit crowns and dark gaps, float RGB."""
    base = np.array(rng.choice([(48, 78, 40), (40, 66, 44), (62, 86, 46), (52, 74, 52)]), np.float32)
    stand = fbm(rng, h, w, (160.0, 64.0))  # stands of different species/age
    crowns = value_noise(rng, h, w, rng.uniform(5, 9))
    crowns = crowns ** 1.6
    fine = value_noise(rng, h, w, 2.5)
    light = (crowns * 70 + fine * 22 - 40)[..., None]
    tint = ((stand - 0.5) * 40)[..., None] * np.array([0.6, 1.0, 0.3], np.float32)
    return base + light + tint


def _water_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Water: dark, smooth, bluish to greenish-brown with soft ripples, float RGB."""
    base = np.array(rng.choice([(42, 62, 82), (48, 70, 66), (60, 72, 70), (36, 52, 70)]), np.float32)
    slow = (fbm(rng, h, w, (256.0, 64.0)) - 0.5) * 24
    ripple = (value_noise(rng, h, w, 4.0) - 0.5) * 6
    return base + (slow + ripple)[..., None]


def _road_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.75:  # asphalt
        g = rng.uniform(95, 140)
        return np.array((g, g, g * 1.02), np.float32)
    return np.array((rng.uniform(160, 185), rng.uniform(150, 170), rng.uniform(130, 145)), np.float32)  # gravel


ROOF_COLOURS = np.array(
    [(168, 72, 56), (150, 60, 50), (186, 96, 70), (92, 90, 96), (70, 70, 76), (120, 86, 70), (200, 198, 190)],
    np.float32,
)


@dataclass(frozen=True)
class Painters:
    """How a style paints each class (see :data:`STYLES`); the scene layout is the same for every style."""

    fields: Callable[[np.random.Generator, int, int], np.ndarray]
    woodland: Callable[[np.random.Generator, int, int], np.ndarray]
    water: Callable[[np.random.Generator, int, int], np.ndarray]
    road_colour: Callable[[np.random.Generator], np.ndarray]
    roof_colours: np.ndarray
    finish: Callable[[np.random.Generator, np.ndarray], np.ndarray]
    scatter_trees: Callable[..., None] | None = None  # single crowns over fields (woodland in the mask)
    wide_river: float = 0.0  # chance of a river 25-60 % of the scene wide (a riverfront)
    clutter: Callable[..., None] | None = None  # small objects that keep the class below (vehicles, markings)
    ground: Callable[..., None] | None = None  # tracks, scrub, shade, dead wood over the land (mask unchanged)
    shore: Callable[..., None] | None = None  # shore vegetation and shade, once water and woodland are placed
    sun: Callable[[np.random.Generator], tuple[float, float]] | None = None  # building shadow direction per scene
    road_half_px: tuple[float, float] = (7.0, 14.0)  # half width range of roads: 3.5-7 m wide at 0.25 m/px
    estate: Callable[..., None] | None = None  # blocks of flats, streets and lawns on open land (changes the mask)


def painters(style: str) -> Painters:
    """The painters of ``style``: ``v1`` (the first generator), ``v2`` (more of the real world's variety), ``v3``
    or ``v4`` (each the one before plus what the real-scene sanity suite showed its models misread), ``v5`` (v3 with
    shaded conifer forest, a bluish haze, housing estates and v4's ground without its thickets), ``v6`` (v5 with lone
    trees casting long shadows, more estates and more haze)."""
    if style == "v1":
        return Painters(_fields, _woodland_texture, _water_texture, _road_colour, ROOF_COLOURS, _finish)
    if style == "v2":
        from training import synthetic_v2 as v2

        return Painters(v2.fields, v2.woodland, v2.water, v2.road_colour, v2.ROOF_COLOURS, v2.finish,
                        scatter_trees=v2.scatter_trees, wide_river=v2.WIDE_RIVER, clutter=v2.clutter)
    if style == "v3":
        from training import synthetic_v3 as v3

        return replace(painters("v2"), woodland=v3.woodland, clutter=v3.clutter, ground=v3.tracks, shore=v3.shore,
                       sun=v3.sun_shadow, road_half_px=v3.ROAD_HALF_PX)
    if style == "v4":
        from training import synthetic_v4 as v4

        return replace(painters("v3"), ground=v4.ground)
    if style == "v5":
        from training import synthetic_v5 as v5

        return replace(painters("v3"), woodland=v5.woodland, ground=v5.ground, finish=v5.finish, estate=v5.estate)
    if style == "v6":
        from training import synthetic_v6 as v6

        return replace(painters("v5"), scatter_trees=v6.lone_trees, estate=v6.estate, finish=v6.finish)
    raise TrainingError(f"unknown synthetic style {style!r}; use one of {', '.join(STYLES)}")


# ----------------------------------------------------------------------------------------------- scene


def _jittered(rng: np.random.Generator, share: float, jitter: float) -> float:
    return float(share * rng.uniform(1 - jitter, 1 + jitter)) if share > 0 else 0.0


def generate_scene(rng: np.random.Generator, size: int, shares: ClassShares, jitter: float = 0.35,
                   style: str = "v1") -> tuple[np.ndarray, np.ndarray]:
    """Paint one scene in ``style`` (see :func:`painters`).

    Returns:
        ``(image, mask)``: uint8 ``(size, size, 3)`` RGB and uint8 ``(size, size)`` class ids.
    """
    paint = painters(style)
    h = w = size
    area = h * w
    mask = np.zeros((h, w), np.uint8)
    img = paint.fields(rng, h, w)

    # Water first (lakes from thresholded smooth noise, sometimes a river), so woodland fills around it.
    water_target = _jittered(rng, shares.water, jitter)
    water = np.zeros((h, w), bool)
    riverfront = bool(paint.wide_river) and rng.random() < paint.wide_river  # (v1 draws no number here)
    if riverfront:
        half = rng.uniform(0.12, 0.3) * size
        _paint_polyline(water, _wandering_line(rng, h, w, bend=rng.uniform(20, 120), n=24), half)
        water_target = max(water_target, water.mean())
    if water_target > 0 and rng.random() < 0.5:
        # A river may take at most 70 % of the water budget (a 1024 px scene cannot hold a wide one).
        river_half = min(rng.uniform(14, 48), 0.7 * water_target * area / (2 * 1.2 * size))
        if river_half >= 6:
            _paint_polyline(water, _wandering_line(rng, h, w, bend=rng.uniform(60, 300), n=24), river_half)
    remaining = water_target - water.mean()
    if remaining > 0:
        lakes = fbm(rng, h, w, (size / 3, size / 8, 48.0))
        water |= lakes > _threshold_for_share(lakes, remaining, ~water)
    mask[water] = WATER
    img[water] = paint.water(rng, h, w)[water]
    woodland_target = _jittered(rng, shares.woodland, jitter)
    if riverfront:  # the land left keeps the usual mix of classes
        woodland_target *= 1 - water.mean()
    forest = fbm(rng, h, w, (size / 2.5, size / 6, 64.0))
    wood = (forest > _threshold_for_share(forest, woodland_target / max(1 - water.mean(), 1e-6), ~water)) & ~water
    mask[wood] = WOODLAND
    img[wood] = paint.woodland(rng, h, w)[wood]
    if paint.scatter_trees is not None:
        paint.scatter_trees(rng, img, mask, ~(water | wood), paint.woodland)
    if paint.shore is not None:
        paint.shore(rng, img, mask)
    if paint.ground is not None:
        paint.ground(rng, img, mask)

    # Roads: add crossing roads until the target share is met.
    road_target = _jittered(rng, shares.road, jitter)
    road = np.zeros((h, w), bool)
    road_dist = np.full((h, w), np.inf, np.float32)
    road_lines: list[tuple[np.ndarray, float]] = []
    for _ in range(12):
        if road.sum() >= road_target * area:
            break
        half = rng.uniform(*paint.road_half_px)
        # In a scene too small for one road at the target share, draw the road only with the probability
        # that keeps the expected share on target (one road across 1024 px is already ~2 %).
        expected = 2 * half * 1.1 * size
        if not road.any() and expected > road_target * area and rng.random() > road_target * area / expected:
            break
        line = _wandering_line(rng, h, w, bend=rng.uniform(0, 200))
        this = np.zeros((h, w), bool)
        dist = np.full((h, w), np.inf, np.float32)
        _paint_polyline(this, line, half, dist)
        colour = paint.road_colour(rng)
        edge_shade = np.clip(dist[this] / half, 0, 1) ** 4  # darker verges
        img[this] = colour * (1 - 0.18 * edge_shade[:, None])
        road |= this
        np.minimum(road_dist, dist, out=road_dist)
        road_lines.append((line, half))
    road &= ~water | (road_dist < 100)  # bridges over rivers keep the road class
    mask[road] = ROAD

    # Buildings: rotated rectangles beside roads (or in isolated farmsteads), with a shadow cast south-east
    # (v1, v2) or away from the scene's sun.
    shadow = paint.sun(rng) if paint.sun is not None else SOUTH_EAST
    building_target = _jittered(rng, shares.building, jitter)
    built = np.zeros((h, w), bool)
    for _ in range(400):
        if built.sum() >= building_target * area:
            break
        if road_lines and rng.random() < 0.85:
            line, half = road_lines[int(rng.integers(len(road_lines)))]
            i = int(rng.integers(len(line) - 1))
            p0, p1 = line[i], line[i + 1]
            t = rng.random()
            direction = (p1 - p0) / (np.linalg.norm(p1 - p0) + 1e-9)
            normal = np.array([-direction[1], direction[0]]) * rng.choice([-1, 1])
            length, width = rng.uniform(36, 72), rng.uniform(28, 48)
            setback = half + rng.uniform(12, 60) + width / 2
            cy, cx = p0 + t * (p1 - p0) + normal * setback
            angle = math.atan2(direction[0], direction[1]) + rng.normal(0, 0.05)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            length, width = rng.uniform(36, 90), rng.uniform(28, 56)
            angle = rng.uniform(0, np.pi)
        _paint_building(rng, img, mask, built, water | road, cy, cx, length, width, angle, paint.roof_colours,
                        shadow)
    if paint.estate is not None:
        paint.estate(rng, img, mask, shadow)
    if paint.clutter is not None:
        paint.clutter(rng, img, mask, road_lines)

    img += rng.normal(0, rng.uniform(2, 5), img.shape).astype(np.float32)
    img = paint.finish(rng, img)
    return img, mask


def _paint_building(
    rng: np.random.Generator,
    img: np.ndarray,
    mask: np.ndarray,
    built: np.ndarray,
    forbidden: np.ndarray,
    cy: float,
    cx: float,
    length: float,
    width: float,
    angle: float,
    roof_colours: np.ndarray = ROOF_COLOURS,
    shadow_direction: tuple[float, float] = SOUTH_EAST,
) -> None:
    h, w = mask.shape
    reach = int(math.hypot(length, width) / 2) + 16
    r0, r1, c0, c1 = int(cy) - reach, int(cy) + reach, int(cx) - reach, int(cx) + reach
    if r0 < 0 or c0 < 0 or r1 > h or c1 > w:
        return
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] - cy
    xs = np.arange(c0, c1, dtype=np.float32)[None, :] - cx
    ca, sa = math.cos(angle), math.sin(angle)

    def footprint(dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
        u = (xs - dx) * ca + (ys - dy) * sa
        v = -(xs - dx) * sa + (ys - dy) * ca
        return (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2), v

    roof, v = footprint(0.0, 0.0)
    if (forbidden[r0:r1, c0:c1] & roof).any() or (built[r0:r1, c0:c1] & roof).any():
        return
    shift = rng.uniform(6, 14)
    shadow, _ = footprint(shift * shadow_direction[0], shift * shadow_direction[1])
    shadow &= ~roof
    window = img[r0:r1, c0:c1]
    window[shadow] *= 0.45
    colour = roof_colours[int(rng.integers(len(roof_colours)))] + rng.normal(0, 8, 3).astype(np.float32)
    gable = rng.random() < 0.7
    shade = np.where(v > 0, 1.0, 0.78) if gable else np.ones_like(v)
    ridge = (np.abs(v) < 1.5) & gable
    pixels = colour[None, None, :] * shade[..., None] + (ridge * 25.0)[..., None]
    window[roof] = pixels[roof]
    mask[r0:r1, c0:c1][roof] = BUILDING
    built[r0:r1, c0:c1] |= roof


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Camera effects: uneven illumination, a colour cast, slight blur; then clip to uint8."""
    h, w, _ = img.shape
    light = 0.88 + 0.24 * value_noise(rng, h, w, max(h, w) / 2)
    cast = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    img = img * light[..., None] * cast
    # [1, 2, 1] / 4 blur in both directions: the optics of a real camera soften every edge a little.
    blurred = img.copy()
    blurred[1:-1] = (img[:-2] + 2 * img[1:-1] + img[2:]) / 4
    out = blurred.copy()
    out[:, 1:-1] = (blurred[:, :-2] + 2 * blurred[:, 1:-1] + blurred[:, 2:]) / 4
    return np.clip(out, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- writing


def scene_style(style: str, index: int) -> str:
    """The style scene ``index`` of a dataset of ``style`` is painted in (see :func:`style_cycle`)."""
    cycle = style_cycle(style)
    return cycle[index % len(cycle)]


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for scene ``index``: independent of how many scenes are made in total."""
    return np.random.default_rng([seed, index])


def write_geotiff(path: Path, array: np.ndarray, transform: object) -> None:
    """Write ``(H, W)`` or ``(H, W, bands)`` uint8 as a tiled, compressed GeoTIFF in EPSG:2180, atomically."""
    import rasterio

    bands = 1 if array.ndim == 2 else array.shape[2]
    data = array[None] if array.ndim == 2 else np.moveaxis(array, 2, 0)
    profile = {
        "driver": "GTiff",
        "height": array.shape[0],
        "width": array.shape[1],
        "count": bands,
        "dtype": "uint8",
        "crs": CRS,
        "transform": transform,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if bands == 3:
        profile["photometric"] = "RGB"
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)


def generate_dataset(
    out_dir: Path, params: SyntheticParams, progress: Callable[[int, int], None] | None = None
) -> list[str]:
    """Write ``params.orthophotos`` scenes into ``out_dir/images`` and ``out_dir/masks``; return their names."""
    from rasterio.transform import from_origin

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(params.orthophotos):
        rng = scene_rng(params.seed, i)
        image, mask = generate_scene(rng, params.size, params.shares, params.jitter, scene_style(params.style, i))
        # Plausible PL-1992 coordinates, snapped to whole metres.
        x0, y0 = float(rng.integers(300_000, 700_000)), float(rng.integers(300_000, 700_000))
        transform = from_origin(x0, y0, GSD_M, GSD_M)
        name = f"{params.prefix}_{params.seed}_{i:03d}"
        write_geotiff(out_dir / "images" / f"{name}.tif", image, transform)
        write_geotiff(out_dir / "masks" / f"{name}.tif", mask, transform)
        names.append(name)
        if progress:
            progress(i + 1, params.orthophotos)
    return names
