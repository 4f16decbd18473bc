"""Drawing primitives of the phantom generator (private to :mod:`cxrbench.datasets.phantom`).

Everything is drawn in *patient coordinates*: x from -1 (image left, the
patient's right on a frontal film) to +1, y from -1 (top) to +1 (bottom). A
:class:`Canvas` maps each pixel to patient coordinates once per image
(scale, shift and rotation of the patient in the field of view), so the
anatomy code never thinks about pixels. Small structures are drawn only inside
their bounding box (:meth:`Canvas.roi`), which keeps a 256 x 256 image to a few
milliseconds of numpy.

Images are built as an *attenuation map* ``P`` (soft tissue ~ 1 per unit of
thickness, bone more, air in the lungs subtracts); :func:`finish` turns it
into a displayed radiograph (window, gamma, blur, noise, collimation and
burned-in markers).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

F32 = np.float32


# -- the pixel grid -----------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _axis(size: int) -> np.ndarray:
    u = (np.arange(size, dtype=F32) + F32(0.5)) * F32(2.0 / size) - F32(1.0)
    u.setflags(write=False)
    return u


class Canvas:
    """Patient coordinates of every pixel of a ``size`` x ``size`` image.

    Pixel centre ``u`` (in [-1, 1]) shows patient point
    ``p = R(-angle) (u - (cx, cy)) / scale``: the patient is shifted by
    (cx, cy), magnified by ``scale`` and rotated by ``angle`` (radians).
    """

    def __init__(self, size: int, cx: float = 0.0, cy: float = 0.0, scale: float = 1.0,
                 angle: float = 0.0) -> None:
        self.size = int(size)
        self.cx, self.cy, self.scale, self.angle = float(cx), float(cy), float(scale), float(angle)
        u = _axis(self.size)
        ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
        ux = u[None, :] - F32(cx)
        uy = u[:, None] - F32(cy)
        self.X = (F32(ca) * ux + F32(sa) * uy).astype(F32, copy=False)
        self.Y = (F32(-sa) * ux + F32(ca) * uy).astype(F32, copy=False)
        #: pixels per patient unit (for widths that must stay >= ~1 pixel)
        self.px = self.size * self.scale / 2.0
        self._cs = (math.cos(angle), math.sin(angle))

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """(row, col) of patient point (x, y), as floats."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        ux = self.cx + self.scale * (c * x - s * y)
        uy = self.cy + self.scale * (s * x + c * y)
        return (uy + 1) * self.size / 2 - 0.5, (ux + 1) * self.size / 2 - 0.5

    def roi(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the patient-space box, or None if it is outside."""
        hx, hy = (x1 - x0) * 0.5, (y1 - y0) * 0.5
        mx, my = (x0 + x1) * 0.5, (y0 + y1) * 0.5
        k = self.scale * self.size * 0.5  # pixels per patient unit
        c, s = self._cs
        col = (self.cx + self.scale * (c * mx - s * my) + 1) * self.size * 0.5 - 0.5
        row = (self.cy + self.scale * (s * mx + c * my) + 1) * self.size * 0.5 - 0.5
        ex = k * (hx * abs(c) + hy * abs(s))
        ey = k * (hx * abs(s) + hy * abs(c))
        r0 = max(0, int(row - ey) - 1)
        r1 = min(self.size, int(row + ey) + 3)
        c0 = max(0, int(col - ex) - 1)
        c1 = min(self.size, int(col + ex) + 3)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def sub(self, x0: float, x1: float, y0: float, y1: float):
        """(slices, X, Y) for a patient-space box; slices None when off-image."""
        sl = self.roi(x0, x1, y0, y1)
        if sl is None:
            return None, None, None
        return sl, self.X[sl], self.Y[sl]


# -- shape fields (all take X, Y arrays in patient coordinates) ---------------
def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 as the signed distance ``d`` goes from 0 to ``width`` (clipped)."""
    out = d * F32(1.0 / max(width, 1e-6))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def ellipse_r2(X, Y, cx, cy, a, b, ang=0.0) -> np.ndarray:
    """Squared normalised radius of an ellipse (1 on its border)."""
    dx = X - F32(cx)
    dy = Y - F32(cy)
    if ang:
        c, s = F32(math.cos(ang)), F32(math.sin(ang))
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    dx *= F32(1.0 / a)
    dy *= F32(1.0 / b)
    return dx * dx + dy * dy


def dome(r2: np.ndarray) -> np.ndarray:
    """Projected thickness of an ellipsoid: sqrt(1 - r^2), 0 outside."""
    out = F32(1.0) - r2
    np.maximum(out, 0.0, out=out)
    return np.sqrt(out, out=out)


def seg_d2(X, Y, x0, y0, x1, y1) -> np.ndarray:
    """Squared distance to the segment (x0, y0)-(x1, y1)."""
    vx, vy = x1 - x0, y1 - y0
    L2 = vx * vx + vy * vy or 1e-12
    px = X - F32(x0)
    py = Y - F32(y0)
    t = (px * F32(vx) + py * F32(vy)) * F32(1.0 / L2)
    np.clip(t, 0.0, 1.0, out=t)
    px -= t * F32(vx)
    py -= t * F32(vy)
    return px * px + py * py


def tube(d2: np.ndarray, r: float, cortex: float = 0.0) -> np.ndarray:
    """Projected thickness of a cylinder of radius r (cortical shell if cortex > 0)."""
    out = dome(d2 * F32(1.0 / (r * r)))
    if cortex > 0:
        ri = r * (1.0 - cortex)
        out -= F32(0.6) * dome(d2 * F32(1.0 / (ri * ri)))
    return out


def bone(canvas: Canvas, P: np.ndarray, x0, y0, x1, y1, r, k=1.0, cortex=0.35) -> None:
    """Add a long bone (capsule with cortical shell) to P in its bounding box."""
    pad = r * 1.2
    sl, X, Y = canvas.sub(min(x0, x1) - pad, max(x0, x1) + pad, min(y0, y1) - pad, max(y0, y1) + pad)
    if sl is None:
        return
    P[sl] += F32(k * r * 4) * tube(seg_d2(X, Y, x0, y0, x1, y1), r, cortex)


def blob(canvas: Canvas, P: np.ndarray, cx, cy, a, b, k, ang=0.0) -> None:
    """Add an ellipsoid of density k to P in its bounding box."""
    m = max(a, b) * 1.05
    sl, X, Y = canvas.sub(cx - m, cx + m, cy - m, cy + m)
    if sl is None:
        return
    P[sl] += F32(k) * dome(ellipse_r2(X, Y, cx, cy, a, b, ang))


def ring(canvas: Canvas, P: np.ndarray, cx, cy, a, b, k, shell=0.15, ang=0.0) -> None:
    """An ellipsoidal shell (skull vault, vertebral body, orbit rim)."""
    m = max(a, b) * 1.05
    sl, X, Y = canvas.sub(cx - m, cx + m, cy - m, cy + m)
    if sl is None:
        return
    r2 = ellipse_r2(X, Y, cx, cy, a, b, ang)
    out = dome(r2)
    inner = r2 * F32(1.0 / (1.0 - shell) ** 2)
    out -= dome(inner) * F32(1.0 - shell)
    P[sl] += F32(k) * out


# -- texture bank: vessel trees and smooth noise, fixed per image size --------
N_TEX = 12


@functools.lru_cache(maxsize=4)
def texture_bank(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(vessels, noise): N_TEX lung-marking maps and N_TEX smooth noise fields.

    Both are indexed by patient coordinates (a map pixel covers 2/size patient
    units), are fixed for a given size (seeded constants: part of the generator
    version) and are built once per process.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(20240611)
    s = int(size)
    vessels = np.zeros((N_TEX, s, s), dtype=F32)
    noise = np.zeros((N_TEX, s, s), dtype=F32)
    step = 1.0 / s  # half a pixel in patient units
    for t in range(N_TEX):
        acc = np.zeros(s * s, dtype=np.float64)
        segs: list[tuple[float, float, float, float, float]] = []
        for side in (-1.0, 1.0):
            hx, hy = side * 0.17, -0.12
            n_trunks = 12
            for trunk in range(n_trunks):
                # upper-lobe trunks go up and out, lower-lobe trunks down and out
                ang = math.radians(-115 + 215 * (trunk + rng.uniform(0.1, 0.9)) / n_trunks)
                stack = [(hx, hy, ang, 0.05 * rng.uniform(0.8, 1.2), 1.0, 0)]
                while stack:
                    x, y, a, ln, w, depth = stack.pop()
                    for _ in range(3):  # a slightly wandering branch of 3 pieces
                        a += rng.normal(0.0, 0.15)
                        x2, y2 = x + side * math.cos(a) * ln, y + math.sin(a) * ln
                        segs.append((x, y, x2, y2, w))
                        x, y = x2, y2
                    if depth < 4:
                        for turn in (-1, 1):
                            if rng.random() < 0.85:
                                stack.append((x, y, a + turn * rng.uniform(0.25, 0.6),
                                              ln * rng.uniform(0.7, 0.9), w * 0.62, depth + 1))
        for x0, y0, x1, y1, w in segs:  # type: ignore[misc]
            n = max(2, int(math.hypot(x1 - x0, y1 - y0) / step))
            tt = np.linspace(0.0, 1.0, n)
            xs = x0 + (x1 - x0) * tt
            ys = y0 + (y1 - y0) * tt
            cols = ((xs + 1) / 2 * s).astype(np.int64)
            rows = ((ys + 1) / 2 * s).astype(np.int64)
            ok = (cols >= 0) & (cols < s) & (rows >= 0) & (rows < s)
            np.add.at(acc, rows[ok] * s + cols[ok], w)
        v = gaussian_filter(acc.reshape(s, s), sigma=max(0.6, s / 200))
        v /= np.percentile(v[v > 0], 99) if np.any(v > 0) else 1.0
        vessels[t] = np.clip(v, 0, 1.5)
        g = gaussian_filter(rng.standard_normal((s, s)), sigma=s / 20, mode="wrap")
        noise[t] = g / g.std()
    vessels.setflags(write=False)
    noise.setflags(write=False)
    return vessels, noise


def sample(tex: np.ndarray, c: "Canvas", sl: tuple[slice, slice], dx: float = 0.0, dy: float = 0.0,
           flip: bool = False, sx: float = 1.0) -> np.ndarray:
    """Nearest-neighbour lookup of a bank map at the patient coordinates of a patch.

    The patient's small rotation is ignored here (textures only), which turns
    the lookup into two cheap 1-D takes.
    """
    s = tex.shape[0]
    u = _axis(c.size)
    h = s / 2.0
    xs = (u[sl[1]] - c.cx) / c.scale * sx
    ys = (u[sl[0]] - c.cy) / c.scale
    cols = (xs * (-h if flip else h) + h + dx * h).astype(np.int32)
    rows = (ys * h + h + dy * h).astype(np.int32)
    np.clip(cols, 0, s - 1, out=cols)
    np.clip(rows, 0, s - 1, out=rows)
    return tex.take(rows, axis=0).take(cols, axis=1)


def periodic(q: np.ndarray) -> np.ndarray:
    """A cheap stand-in for cos(2 pi q): 1 - 8 f^2 with f = q - round(q), in [-1, 1]."""
    f = q - np.rint(q)
    f *= f
    f *= F32(-8.0)
    f += F32(1.0)
    return f


@functools.lru_cache(maxsize=4)
def noise_bank(size: int) -> np.ndarray:
    """A fixed (2 size) x (2 size) field of N(0, 1) noise; images take random windows."""
    n = np.random.default_rng(7).standard_normal((2 * size, 2 * size), dtype=F32)
    n.setflags(write=False)
    return n


# -- display --------------------------------------------------------------------
def blur(img: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1, 2, 1] / 4 smoothing, ``passes`` times (edges replicated)."""
    for _ in range(passes):
        t = img.copy()
        t[1:-1] = (img[:-2] + img[2:]) * F32(0.25) + img[1:-1] * F32(0.5)
        img = t
        t = img.copy()
        t[:, 1:-1] = (img[:, :-2] + img[:, 2:]) * F32(0.25) + img[:, 1:-1] * F32(0.5)
        img = t
    return img


# a 5x7 bitmap font for burned-in markers
_FONT = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "S": ["01111", "10000", "10000", "01110", "00001", "00001", "11110"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
    "I": ["11111", "00100", "00100", "00100", "00100", "00100", "11111"],
    "N": ["10001", "11001", "10101", "10011", "10001", "10001", "10001"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    " ": ["00000"] * 7,
}


@functools.lru_cache(maxsize=64)
def _glyphs(text: str, scale: int, shrink: int = 1) -> np.ndarray:
    """Coverage (0..1) of a text bitmap: ``scale`` pixels per font pixel, or 1/``shrink``."""
    rows = []
    for r in range(7):
        rows.append("0".join(_FONT.get(ch, _FONT[" "])[r] for ch in text))
    bm = np.array([[c == "1" for c in row] for row in rows], dtype=F32)
    if shrink > 1:  # small images: average blocks of the font (grey, thinner strokes)
        h, w = -(-bm.shape[0] // shrink) * shrink, -(-bm.shape[1] // shrink) * shrink
        pad = np.zeros((h, w), dtype=F32)
        pad[: bm.shape[0], : bm.shape[1]] = bm
        bm = pad.reshape(h // shrink, shrink, w // shrink, shrink).mean(axis=(1, 3))
    else:
        bm = np.kron(bm, np.ones((scale, scale), dtype=F32))
    bm.setflags(write=False)
    return bm


def stamp(img: np.ndarray, text: str, row: int, col: int, scale: int, value: float,
          shrink: int = 1) -> None:
    """Burn a text marker into img (clipped at the borders)."""
    bm = _glyphs(text, max(1, scale), shrink)
    h, w = bm.shape
    r0, c0 = max(0, row), max(0, col)
    r1, c1 = min(img.shape[0], row + h), min(img.shape[1], col + w)
    if r0 >= r1 or c0 >= c1:
        return
    cov = bm[r0 - row:r1 - row, c0 - col:c1 - col]
    sub = img[r0:r1, c0:c1]
    sub += cov * (F32(value) - sub)


def finish(P: np.ndarray, acq: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Attenuation map -> displayed radiograph in [0, 1] (float32).

    ``acq`` keys: lo, hi (window on P), gamma, blur (passes), noise (sd),
    heel (left-right exposure gradient), collimation (top, bottom, left,
    right fractions), coll_value, marker (text or ""), marker_pos (0-3),
    invert (bool: display air white).
    """
    s = P.shape[0]
    img = P - F32(acq["lo"])
    img *= F32(1.0 / (acq["hi"] - acq["lo"]))
    if acq.get("heel"):
        img += F32(acq["heel"]) * _axis(s)[None, :]
    np.clip(img, 0.0, 1.0, out=img)
    g = acq.get("gamma", 1.0)
    if abs(g - 1.0) > 1e-3:
        # a gamma-like tone curve x + k x (1 - x), monotone for |k| <= 1 (cheaper than a power)
        k = F32(np.clip(1.0 - g, -1.0, 1.0) * 1.4)
        img += k * img * (F32(1.0) - img)
    img = blur(img, int(acq.get("blur", 0)))
    sd = acq.get("noise", 0.0)
    if sd > 0:
        bank = noise_bank(s)
        r0, c0 = rng.integers(0, s, 2)
        img += bank[r0:r0 + s, c0:c0 + s] * F32(sd)
    if acq.get("invert"):
        img = F32(1.0) - img
    t, b, l, r = acq.get("collimation", (0, 0, 0, 0))
    v = F32(acq.get("coll_value", 0.9))
    if t > 0:
        img[: int(t * s)] = v
    if b > 0:
        img[s - int(b * s):] = v
    if l > 0:
        img[:, : int(l * s)] = v
    if r > 0:
        img[:, s - int(r * s):] = v
    text = acq.get("marker", "")
    if text:
        # ~3 % of the image tall: 1 font pixel per image pixel at 128, blocks averaged below
        sc = max(1, s // 128)
        shrink = max(1, int(round(128 / s))) if s < 128 else 1
        h, w = _glyphs(text, sc, shrink).shape
        pad = int(0.05 * s) + 1
        pos = int(acq.get("marker_pos", 0))
        row = pad + int(t * s) if pos < 2 else s - pad - h - int(b * s)
        col = pad + int(l * s) if pos % 2 == 0 else s - pad - w - int(r * s)
        stamp(img, text, row, col, sc, acq.get("marker_value", 1.0), shrink)
    np.clip(img, 0.0, 1.0, out=img)
    return img
