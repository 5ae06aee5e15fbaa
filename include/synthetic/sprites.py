"""Object sprites for synthetic scenes: draw instruments and tumours, place them in a frame, find their visible box.

A sprite is an RGBA image of one object with the object's pivot at the image centre. It is drawn once per video
(anti-aliased polygons, bevel shading, specular highlights) and warped into each frame with its pose, so the box
in the truth comes from the very alpha mask that was composited.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLASSES = ("scalpel", "retractor", "tumor")
ALPHA_ON = 128  # a pixel belongs to the object where its alpha is at least this
MIN_SIDE = 4  # visible boxes narrower or lower than this are left out
MIN_AREA = 30  # ... and so are objects with fewer visible pixels than this
_SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
_Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Box:
    label: str
    x: int
    y: int
    w: int
    h: int

    def as_dict(self) -> dict[str, int | str]:
        return {"label": self.label, "x": self.x, "y": self.y, "w": self.w, "h": self.h}


def make_sprite(label: str, rng: np.random.Generator, size: float, new_look: bool = False) -> np.ndarray:
    """RGBA sprite of one object; ``size`` is its length in pixels, ``new_look`` the drift-scenario styling."""
    if label == "scalpel":
        return _scalpel(rng, size, new_look)
    if label == "retractor":
        return _retractor(rng, size, new_look)
    if label == "tumor":
        return _tumor(rng, size)
    raise ValueError(f"unknown label {label!r}; expected one of {CLASSES}")


def place(rgba: np.ndarray, cx: float, cy: float, angle_deg: float, scale: float, width: int, height: int):
    """Warp ``rgba`` to centre (cx, cy), rotated and scaled; return (x0, y0, patch) clipped to the frame, or None."""
    hs, ws = rgba.shape[:2]
    m = cv2.getRotationMatrix2D((ws / 2, hs / 2), angle_deg, scale)
    m[:, 2] += (cx - ws / 2, cy - hs / 2)
    corners = np.array([[0, 0, 1], [ws, 0, 1], [0, hs, 1], [ws, hs, 1]], np.float64) @ m.T
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)), (width, height)).astype(int)
    if x1 <= x0 or y1 <= y0:
        return None
    m[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(rgba, m, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    return int(x0), int(y0), patch


def visible_box(alpha: np.ndarray, x0: int, y0: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Box (x, y, w, h) of the pixels of ``alpha`` (placed at x0, y0) that are on and inside the frame, or None."""
    h, w = alpha.shape
    cx0, cy0 = max(0, -x0), max(0, -y0)
    cx1, cy1 = min(w, width - x0), min(h, height - y0)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    on = alpha[cy0:cy1, cx0:cx1] >= ALPHA_ON
    if np.count_nonzero(on) < MIN_AREA:
        return None
    cols, rows = np.flatnonzero(on.any(axis=0)), np.flatnonzero(on.any(axis=1))
    bw, bh = int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
    if bw < MIN_SIDE or bh < MIN_SIDE:
        return None
    return x0 + cx0 + int(cols[0]), y0 + cy0 + int(rows[0]), bw, bh


def _scalpel(rng: np.random.Generator, size: float, new_look: bool) -> np.ndarray:
    length, thin = (size * 1.25, 0.7) if new_look else (size, 1.0)
    blade, handle = ((225, 185, 70), (40, 70, 170)) if new_look else ((198, 203, 210), (88, 92, 100))
    hw = 0.045 * thin
    belly = 0.05 * thin
    edge = [[0.42, 0.4 * belly], [0.3, belly], [0.1, belly]]
    parts = [
        (np.array([[-0.5, -hw], [0.03, -hw], [0.03, hw], [-0.5, hw]]), handle),
        (np.array([[0.0, -0.6 * hw], [0.5, -0.5 * hw], *edge, [0.0, 0.6 * hw]]), blade),
    ]
    ridges = [np.array([[-0.4 + 0.05 * k, -0.7 * hw], [-0.4 + 0.05 * k, 0.7 * hw]]) for k in range(5)]
    return _finish(*_draw(parts, length, ridges=ridges), rng, metallic=True)


def _retractor(rng: np.random.Generator, size: float, new_look: bool) -> np.ndarray:
    length, hw, hook = (size * 0.8, 0.085, 0.22) if new_look else (size, 0.05, 0.32)
    steel, grip = ((60, 105, 200), (215, 175, 60)) if new_look else ((168, 173, 181), (110, 113, 121))
    parts = [
        (np.array([[-0.5, -hw], [0.4, -hw], [0.4, hw], [-0.5, hw]]), steel),
        (np.array([[0.3, -hw], [0.42, -hw], [0.42, hook], [0.3, hook]]), steel),
        (np.array([[0.18, hook - 0.08], [0.42, hook - 0.08], [0.42, hook], [0.18, hook]]), steel),
        (np.array([[-0.5, -1.3 * hw], [-0.22, -1.3 * hw], [-0.22, 1.3 * hw], [-0.5, 1.3 * hw]]), grip),
    ]
    return _finish(*_draw(parts, length), rng, metallic=True)


def _tumor(rng: np.random.Generator, size: float) -> np.ndarray:
    phi = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = 0.5 * (1 + sum(rng.uniform(0.04, 0.16) * np.sin(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)))
    outline = np.stack([radius * np.cos(phi), 0.85 * radius * np.sin(phi)], axis=1)
    rgb, alpha = _draw([(outline, (118, 36, 72))], size)
    noise = _blotches(rng, alpha.shape)
    rgb = (rgb * (0.6 + 0.7 * noise)[..., None]).clip(0, 255).astype(np.uint8)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
    return _finish(rgb, alpha, rng, metallic=False)


def _draw(parts, length: float, ridges=()) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise polygons given in object units (length 1, pivot at 0) into an RGB layer and an AA alpha mask."""
    extent = np.abs(np.concatenate([p for p, _ in parts])).max(axis=0) * length + 4
    w, h = (2 * np.ceil(extent)).astype(int)
    origin = np.array([w / 2, h / 2])
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = parts[0][1]
    alpha = np.zeros((h, w), np.uint8)
    scale = 1 << _SHIFT
    for pts, colour in parts:
        poly = np.round((pts * length + origin) * scale).astype(np.int32)
        cv2.fillPoly(rgb, [poly], colour, cv2.LINE_8, shift=_SHIFT)
        cv2.polylines(rgb, [poly], True, colour, 2, cv2.LINE_8, shift=_SHIFT)  # bleed colour past the AA edge
        cv2.fillPoly(alpha, [poly], 255, cv2.LINE_AA, shift=_SHIFT)
    for line in ridges:
        seg = np.round((line * length + origin) * scale).astype(np.int32)
        cv2.polylines(rgb, [seg], False, (55, 58, 64), 1, cv2.LINE_AA, shift=_SHIFT)
    return rgb, alpha


def _finish(rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, *, metallic: bool) -> np.ndarray:
    """Bevel-shade the object and add specular highlights; return RGBA."""
    inside = (alpha > 0).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    depth = np.sqrt(dist / max(float(dist.max()), 1.0))
    shade = (0.62 + 0.5 * depth) if metallic else (0.8 + 0.3 * depth)
    out = rgb.astype(np.float32) * shade[..., None]
    out += 235 * _highlights(rng, alpha, 3 if metallic else 2, 0.05 if metallic else 0.03)[..., None]
    return np.dstack([out.clip(0, 255).astype(np.uint8), alpha])


def _highlights(rng: np.random.Generator, alpha: np.ndarray, count: int, rel: float) -> np.ndarray:
    """Small blurred bright ellipses inside the object's mask (float layer 0..1)."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha >= 250)
    layer = np.zeros((h, w), np.float32)
    if len(xs) == 0:
        return layer
    for _ in range(count):
        k = rng.integers(len(xs))
        axes = (max(1, round(rel * max(w, h))), max(1, round(rel * 0.3 * max(w, h))))
        cv2.ellipse(layer, (int(xs[k]), int(ys[k])), axes, 0, 0, 360, rng.uniform(0.5, 0.95), -1, cv2.LINE_AA)
    return cv2.GaussianBlur(layer, (0, 0), 1.2) * (alpha.astype(np.float32) / 255)


def _blotches(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth two-octave noise in 0..1 for the tumour surface."""
    h, w = shape[:2]
    acc = np.zeros((h, w), np.float32)
    for cells, weight in ((4, 0.6), (10, 0.4)):
        grid = rng.random((cells, cells), dtype=np.float32)
        acc += weight * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)
