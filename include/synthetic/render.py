"""Synthetic surgical scenes: a seeded scene (tissue, camera, objects, effects) and the rendering of one frame.

``make_scene`` does the slow work once per video (tissue texture, sprites, smoke); ``render_frame(scene, i)`` is a
pure function of the scene and the frame index, so the same seed always gives byte-identical frames and boxes.
Randomness is drawn from one generator per component, so a drift scenario changes the look of a video but not its
objects' classes or paths.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from include.synthetic.sprites import CLASSES, Box, make_sprite, place, visible_box

SCENARIOS = ("normal", "dark", "smoke", "new_instrument")
_TWO_PI = 2 * np.pi


@dataclass(frozen=True, eq=False)
class Motion:
    """Sum of sinusoids: value(t) = base + sum(amp * sin(2 pi freq t + phase)) + drift * t."""

    base: float
    amp: np.ndarray
    freq: np.ndarray
    phase: np.ndarray
    drift: float = 0.0

    def __call__(self, t: float) -> float:
        return self.base + float(np.sum(self.amp * np.sin(_TWO_PI * self.freq * t + self.phase))) + self.drift * t

    @classmethod
    def draw(cls, rng: np.random.Generator, base: float, amp: float, fmax: float, drift: float = 0.0) -> Motion:
        amp_split = amp * rng.dirichlet(np.ones(3))
        return cls(base, amp_split, rng.uniform(fmax / 6, fmax, 3), rng.uniform(0, _TWO_PI, 3), drift)


@dataclass(frozen=True, eq=False)
class SceneObject:
    label: str
    sprite: np.ndarray
    x: Motion  # centre, as a fraction of the frame width
    y: Motion  # ... and height
    angle: Motion  # degrees
    depth: Motion  # scale factor


@dataclass(frozen=True, eq=False)
class Scene:
    width: int
    height: int
    fps: float
    seed: int
    scenario: str
    texture: np.ndarray
    cam_x: Motion
    cam_y: Motion
    cam_zoom: Motion
    cam_roll: Motion
    objects: tuple[SceneObject, ...]
    blur: Motion
    blur_kind: Motion
    smoke: Motion | None
    smoke_tile: np.ndarray | None  # wisps, 0..1
    smoke_haze: float  # uniform part of the smoke, 0..1
    lut: np.ndarray | None
    vignette: np.ndarray
    black: np.ndarray
    smoke_rgb: np.ndarray

    @property
    def labels(self) -> list[str]:
        return sorted({o.label for o in self.objects})


def make_scene(width: int, height: int, fps: float, seed: int, scenario: str = "normal") -> Scene:
    """Everything about one video that does not change from frame to frame."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"frame size must be even and at least 32x32, got {width}x{height}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    cam = _rng(seed, "camera")
    fx = _rng(seed, "effects")
    smoke = _smoke_motion(_rng(seed, "smoke-level"), scenario)
    return Scene(
        width=width,
        height=height,
        fps=float(fps),
        seed=seed,
        scenario=scenario,
        texture=_tissue(_rng(seed, "tissue"), width, height),
        cam_x=Motion.draw(cam, 0.0, 0.14 * width, 0.15),
        cam_y=Motion.draw(cam, 0.0, 0.14 * height, 0.15),
        cam_zoom=Motion.draw(cam, 1.12, 0.1, 0.08),
        cam_roll=Motion.draw(cam, 0.0, 4.0, 0.05),
        objects=_objects(_rng(seed, "objects"), seed, height, scenario),
        blur=Motion.draw(fx, 0.0, 2.0, 0.4),
        blur_kind=Motion.draw(fx, 0.0, 1.0, 0.3),
        smoke=smoke,
        smoke_tile=_smoke_tile(_rng(seed, "smoke"), width, height) if smoke else None,
        smoke_haze=0.6 if scenario == "smoke" else 0.0,
        lut=_gamma_lut(1.6, 0.55) if scenario == "dark" else None,
        vignette=_vignette(width, height, 0.75 if scenario == "dark" else 0.3),
        black=np.zeros((height, width, 3), np.uint8),
        smoke_rgb=np.full((height, width, 3), (206, 204, 208), np.uint8),
    )


def render_frame(scene: Scene, index: int) -> tuple[np.ndarray, list[Box]]:
    """Frame ``index`` of the scene (RGB uint8, HxWx3) and the boxes of the objects visible in it."""
    t = index / scene.fps
    frame = _camera(scene, t)
    boxes = []
    for obj in scene.objects:
        zoom = scene.cam_zoom(t) * obj.depth(t)
        placed = place(obj.sprite, obj.x(t) * scene.width, obj.y(t) * scene.height, obj.angle(t), zoom,
                       scene.width, scene.height)
        if placed is None:
            continue
        x0, y0, patch = placed
        _composite(frame, x0, y0, patch)
        box = visible_box(patch[..., 3], x0, y0, scene.width, scene.height)
        if box is not None:
            boxes.append(Box(obj.label, *box))
    return _effects(scene, frame, t), boxes


def _rng(seed: int, part: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(part.encode())])


def _objects(rng: np.random.Generator, seed: int, height: int, scenario: str) -> tuple[SceneObject, ...]:
    count = int(rng.integers(1, 4))
    labels = [str(x) for x in rng.choice(CLASSES, size=count)]
    objs = []
    for k, label in enumerate(labels):
        reach = 0.2 if k == 0 else 0.35  # the first object stays mostly in view; others may leave the frame
        centre = rng.uniform(0.5 - reach, 0.5 + reach, 2) if k else rng.uniform(0.38, 0.62, 2)
        size = height * {"scalpel": 0.5, "retractor": 0.55, "tumor": 0.26}[label] * rng.uniform(0.85, 1.15)
        spin = rng.uniform(-12, 12) if label != "tumor" else rng.uniform(-4, 4)
        objs.append(SceneObject(
            label=label,
            sprite=make_sprite(label, _rng(seed, f"sprite-{k}"), size, new_look=scenario == "new_instrument"),
            x=Motion.draw(rng, float(centre[0]), reach, 0.25),
            y=Motion.draw(rng, float(centre[1]), reach, 0.25),
            angle=Motion.draw(rng, rng.uniform(0, 360), 20.0, 0.2, drift=spin),
            depth=Motion.draw(rng, 1.0, 0.12, 0.15),
        ))
    return tuple(sorted(objs, key=lambda o: o.label != "tumor"))  # tissue first, instruments on top


def _noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...], falloff: float = 0.55) -> np.ndarray:
    """Multi-octave smooth noise in 0..1; ``cells`` are the octaves' cell sizes in pixels."""
    acc = np.zeros((h, w), np.float32)
    for k, cell in enumerate(cells):
        grid = rng.random((h // cell + 3, w // cell + 3), dtype=np.float32)
        acc += falloff**k * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _tissue(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Pink/red tissue texture 1.5x the frame, with fat patches, vessels and wet highlights (RGB uint8)."""
    h, w = int(height * 1.5), int(width * 1.5)
    u = max(1, height // 90)
    base = _noise(rng, h, w, (48 * u, 24 * u, 12 * u, 6 * u, 2 * u))[..., None]
    fat = np.clip((_noise(rng, h, w, (64 * u, 16 * u))[..., None] - 0.62) * 3.5, 0, 0.7)
    tex = (1 - base) * np.float32((142, 40, 52)) + base * np.float32((226, 122, 122))
    tex = (1 - fat) * tex + fat * np.float32((228, 196, 140))
    tex = tex.clip(0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        thickness = int(rng.integers(1, 4)) * max(1, u // 2)
        cv2.polylines(tex, [_vessel(rng, w, h)], False, (112, 22, 38), thickness, cv2.LINE_AA, shift=4)
    tex = cv2.GaussianBlur(tex, (3, 3), 0)
    shine = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(10, 25))):
        axes = (int(rng.integers(1, 5)) * u, max(1, int(rng.integers(1, 3)) * u // 2))
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.ellipse(shine, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    shine = cv2.GaussianBlur(shine, (0, 0), 1.2 * u) // 4 * 3
    return cv2.add(tex, cv2.merge([shine, shine, shine]))


def _vessel(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A smooth random walk across the texture, as int points with 4 fractional bits."""
    heading = rng.uniform(0, _TWO_PI) + np.cumsum(rng.normal(0, 0.22, 40))
    step = max(w, h) / 45
    pts = np.array([rng.uniform(0, w), rng.uniform(0, h)]) + np.cumsum(
        step * np.stack([np.cos(heading), np.sin(heading)], axis=1), axis=0)
    return np.round(pts * 16).astype(np.int32)


def _smoke_motion(rng: np.random.Generator, scenario: str) -> Motion | None:
    light = rng.random() < 0.35  # light smoke in about a third of the normal videos
    if scenario == "smoke":
        return Motion.draw(rng, 0.85, 0.15, 0.1)
    if scenario == "normal" and light:
        return Motion.draw(rng, 0.0, 0.45, 0.12)
    return None


def _smoke_tile(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Wispy smoke density in 0..1, twice the frame, for a drifting crop."""
    n = _noise(rng, 2 * height, 2 * width, (width // 3, width // 6, width // 14), falloff=0.6)
    return np.clip((n - 0.15) / 0.85, 0, 1).astype(np.float32) ** 1.3


def _gamma_lut(gamma: float, gain: float) -> np.ndarray:
    return (255 * gain * (np.arange(256) / 255) ** gamma).round().astype(np.uint8)


def _vignette(width: int, height: int, strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
    return np.clip(1 - strength * r2 / 2, 0, 1).astype(np.float32)


def _camera(scene: Scene, t: float) -> np.ndarray:
    """The tissue seen by a slowly panning, zooming and rolling scope."""
    th, tw = scene.texture.shape[:2]
    zoom, roll = scene.cam_zoom(t), np.deg2rad(scene.cam_roll(t))
    a = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]]) / zoom
    centre = np.array([tw / 2 + scene.cam_x(t), th / 2 + scene.cam_y(t)])
    m = np.hstack([a, (centre - a @ np.array([scene.width / 2, scene.height / 2]))[:, None]])
    return cv2.warpAffine(scene.texture, m, (scene.width, scene.height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)


def _composite(frame: np.ndarray, x0: int, y0: int, patch: np.ndarray) -> None:
    h, w = patch.shape[:2]
    region = frame[y0:y0 + h, x0:x0 + w]
    alpha = patch[..., 3].astype(np.float32) * np.float32(1 / 255)
    region[:] = cv2.blendLinear(np.ascontiguousarray(patch[..., :3]), np.ascontiguousarray(region), alpha, 1 - alpha)


def _effects(scene: Scene, frame: np.ndarray, t: float) -> np.ndarray:
    """Occasional focus or motion blur, smoke, scope exposure and vignette."""
    blur = scene.blur(t) - 1.35  # > 0 in short episodes, a few percent of the time
    if blur > 0:
        if scene.blur_kind(t) > 0:
            frame = cv2.GaussianBlur(frame, (0, 0), 0.8 + 4 * blur)
        else:
            frame = cv2.filter2D(frame, -1, _motion_kernel(blur, scene.blur_kind(t)))
    if scene.smoke is not None and scene.smoke_tile is not None:
        density = float(np.clip(scene.smoke(t), 0, 1))
        if density > 0.01:
            frame = _smoke(scene, frame, t, density)
    if scene.lut is not None:
        frame = cv2.LUT(frame, scene.lut)
    return cv2.blendLinear(frame, scene.black, scene.vignette, 1 - scene.vignette)


def _motion_kernel(strength: float, direction: float) -> np.ndarray:
    size = 2 * int(2 + 6 * min(strength, 0.65)) + 1
    kernel = np.zeros((size, size), np.float32)
    angle = direction * np.pi
    dx, dy = np.cos(angle) * size / 2, np.sin(angle) * size / 2
    c = size // 2
    cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    return kernel / kernel.sum()


def _smoke(scene: Scene, frame: np.ndarray, t: float, density: float) -> np.ndarray:
    tile = scene.smoke_tile
    assert tile is not None
    ox = int(_bounce(9.0 * t + 31 * scene.seed, tile.shape[1] - scene.width))
    oy = int(_bounce(4.0 * t + 17 * scene.seed, tile.shape[0] - scene.height))
    wisps = tile[oy:oy + scene.height, ox:ox + scene.width]
    alpha = wisps * np.float32(density * (1 - scene.smoke_haze)) + np.float32(density * scene.smoke_haze)
    return cv2.blendLinear(scene.smoke_rgb, frame, alpha, 1 - alpha)


def _bounce(x: float, span: int) -> float:
    """Triangle wave in [0, span]: a drift that turns back at the edges instead of jumping."""
    x = x % (2 * span)
    return x if x <= span else 2 * span - x
