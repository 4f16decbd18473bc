"""Non-chest body regions of the phantom: hand, skull, knee, lumbar spine, pelvis.

Each region has a sampler (per-patient shape parameters) and a drawing
function ``draw_<region>(canvas, params, view) -> attenuation map``. They exist
so that a phantom dataset has several IRMA classes (anatomy and direction
axes differ) and IRMA error is meaningful; they carry no findings.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from cxrbench.datasets._phantom_draw import F32, Canvas, blob, bone, dome, ellipse_r2, ramp, ring, seg_d2

#: (region, view) -> IRMA code TTTT-DDD-AAA-BBB (technical, direction, anatomy, biology)
IRMA_CODES: dict[tuple[str, str], str] = {
    ("chest", "PA"): "1123-110-500-000",
    ("chest", "AP"): "1123-127-500-000",
    ("chest", "LL"): "1123-211-500-000",
    ("hand", "PA"): "1121-110-410-700",
    ("hand", "OBL"): "1121-410-410-700",
    ("skull", "AP"): "1121-120-200-700",
    ("skull", "LAT"): "1121-220-230-700",
    ("knee", "AP"): "1121-120-940-700",
    ("knee", "LAT"): "1121-230-940-700",
    ("spine", "AP"): "1121-120-330-700",
    ("spine", "LAT"): "1121-210-330-700",
    ("pelvis", "AP"): "1121-120-800-700",
}

#: views available per non-chest region, with their relative frequencies
REGION_VIEWS: dict[str, tuple[tuple[str, float], ...]] = {
    "hand": (("PA", 0.6), ("OBL", 0.4)),
    "skull": (("AP", 0.55), ("LAT", 0.45)),
    "knee": (("AP", 0.5), ("LAT", 0.5)),
    "spine": (("AP", 0.5), ("LAT", 0.5)),
    "pelvis": (("AP", 1.0),),
}


def _soft(c: Canvas, P: np.ndarray, x0, y0, x1, y1, r, k=1.0) -> None:
    """Soft tissue around a segment (a limb), merged with what is there (max)."""
    sl, X, Y = c.sub(min(x0, x1) - r, max(x0, x1) + r, min(y0, y1) - r, max(y0, y1) + r)
    if sl is not None:
        np.maximum(P[sl], F32(k) * dome(seg_d2(X, Y, x0, y0, x1, y1) * F32(1.0 / (r * r))), out=P[sl])


def _rrect(c: Canvas, P: np.ndarray, cx, cy, a, b, k, shell=0.18, ang=0.0) -> None:
    """A rounded box of bone with a cortical shell (vertebral body)."""
    m = max(a, b) * 1.45
    sl, X, Y = c.sub(cx - m, cx + m, cy - m, cy + m)
    if sl is None:
        return
    dx, dy = X - F32(cx), Y - F32(cy)
    if ang:
        cs, sn = F32(math.cos(ang)), F32(math.sin(ang))
        dx, dy = cs * dx + sn * dy, -sn * dx + cs * dy
    u = dx * F32(1.0 / a)
    v = dy * F32(1.0 / b)
    u *= u
    v *= v
    r = np.sqrt(u * u + v * v)  # superellipse of order 4, 1 on the border
    out = ramp(F32(1.0) - r, 0.15)
    out += F32(0.8) * ramp(F32(shell) - np.abs(F32(1.0 - shell) - r), shell) * (r < 1)
    P[sl] += F32(k) * out


# -- hand -------------------------------------------------------------------
def sample_hand(rng: np.random.Generator) -> dict[str, Any]:
    return {"mirror": bool(rng.random() < 0.5), "spread": rng.uniform(0.05, 0.22),
            "len": rng.uniform(0.9, 1.1), "width": rng.uniform(0.9, 1.1), "rot": rng.uniform(-0.15, 0.15)}


def draw_hand(c: Canvas, p: dict[str, Any], view: str) -> np.ndarray:
    S = c.size
    P = np.zeros((S, S), dtype=F32)
    m = -1.0 if p["mirror"] else 1.0
    sx = (0.7 if view == "OBL" else 1.0) * p["width"] * m
    L = p["len"]

    def pt(x, y):  # hand coordinates -> patient coordinates (fills the field)
        return x * sx * 1.7, (y - 0.22) * L * 1.7

    # forearm (radius, ulna) and palm soft tissue
    _soft(c, P, *pt(0.0, 0.45), *pt(0.0, 1.2), 0.4, k=0.8)
    sl, X, Y = c.sub(-0.9, 0.9, -0.7, 0.6)
    if sl is not None:
        np.maximum(P[sl], F32(0.75) * dome(ellipse_r2(X, Y, *pt(0.0, 0.15), 0.56 * abs(sx), 0.56 * L)),
                   out=P[sl])
    bone(c, P, *pt(-0.1, 0.5), *pt(-0.1, 1.2), 0.1, k=0.7)
    bone(c, P, *pt(0.12, 0.52), *pt(0.12, 1.2), 0.075, k=0.7)
    # carpals: a cluster of small bones
    for (x, y) in ((-0.12, 0.3), (-0.03, 0.33), (0.06, 0.33), (0.14, 0.34), (-0.13, 0.2),
                   (-0.05, 0.21), (0.04, 0.2), (0.12, 0.22)):
        blob(c, P, *pt(x, y), 0.075 * abs(sx), 0.07 * L, 0.12)
    # metacarpals and phalanges of fingers 2-5, then the thumb
    for j, x in enumerate((-0.12, -0.03, 0.06, 0.15)):
        ang = (j - 1.5) * p["spread"]
        dx, dy = math.sin(ang), -math.cos(ang)
        x0, y0 = x, 0.15
        lens = (0.3, 0.2, 0.13, 0.09) if j in (1, 2) else (0.28, 0.17, 0.11, 0.08)
        for k_, ln in enumerate(lens):
            x1, y1 = x0 + dx * ln, y0 + dy * ln
            _soft(c, P, *pt(x0, y0), *pt(x1, y1), 0.09, k=0.45 if k_ else 0.7)
            bone(c, P, *pt(x0 + dx * 0.012, y0 + dy * 0.012), *pt(x1 - dx * 0.012, y1 - dy * 0.012),
                 0.036 if k_ < 3 else 0.03, k=0.8)
            x0, y0 = x1, y1
    x0, y0 = -0.17, 0.25
    ang = -0.75 - p["spread"]
    for ln in (0.22, 0.15, 0.1):
        x1, y1 = x0 + math.sin(ang) * ln, y0 - math.cos(ang) * ln
        _soft(c, P, *pt(x0, y0), *pt(x1, y1), 0.1, k=0.5)
        bone(c, P, *pt(x0, y0), *pt(x1, y1), 0.04, k=0.8)
        x0, y0 = x1, y1
    return P


# -- skull -------------------------------------------------------------------
def sample_skull(rng: np.random.Generator) -> dict[str, Any]:
    return {"a": rng.uniform(0.55, 0.65), "b": rng.uniform(0.62, 0.72), "shell": rng.uniform(0.08, 0.12),
            "jaw": rng.uniform(0.9, 1.1)}


def draw_skull(c: Canvas, p: dict[str, Any], view: str) -> np.ndarray:
    S = c.size
    P = np.zeros((S, S), dtype=F32)
    a, b = p["a"], p["b"]
    if view == "AP":
        blob(c, P, 0.0, -0.05, a + 0.06, b + 0.06, 0.5)  # scalp and brain
        blob(c, P, 0.0, 0.45, 0.42, 0.42, 0.45)  # face soft tissue
        ring(c, P, 0.0, -0.08, a, b, 0.5, shell=p["shell"])
        for s in (-1.0, 1.0):
            ring(c, P, s * 0.22, 0.12, 0.12, 0.11, 0.22, shell=0.25)  # orbits
            bone(c, P, s * 0.5, 0.22, s * 0.12, 0.05, 0.035, k=1.2)  # petrous ridges
            bone(c, P, s * 0.4 * p["jaw"], 0.35, s * 0.32 * p["jaw"], 0.72, 0.04, k=1.0)  # mandible
            bone(c, P, s * 0.32 * p["jaw"], 0.72, 0.0, 0.82, 0.04, k=1.0)
        blob(c, P, 0.0, 0.3, 0.06, 0.12, -0.15)  # nasal cavity
        bone(c, P, -0.25, 0.52, 0.25, 0.52, 0.04, k=0.9)  # maxilla / teeth
    else:
        blob(c, P, 0.05, -0.1, a + 0.2, b - 0.02, 0.5)
        blob(c, P, -0.45, 0.4, 0.3, 0.35, 0.45)
        ring(c, P, 0.05, -0.12, a + 0.14, b - 0.08, 0.5, shell=p["shell"], ang=0.1)
        ring(c, P, -0.55, 0.08, 0.11, 0.12, 0.2, shell=0.3)  # orbit
        ring(c, P, 0.02, 0.1, 0.06, 0.05, 0.3, shell=0.4)  # sella turcica
        bone(c, P, -0.62, 0.48, -0.2, 0.45, 0.04, k=0.9)  # maxilla / teeth
        bone(c, P, 0.1, 0.3, 0.05, 0.68 * p["jaw"], 0.04, k=1.0)  # ramus
        bone(c, P, 0.05, 0.68 * p["jaw"], -0.55, 0.72 * p["jaw"], 0.04, k=1.0)  # body of mandible
        bone(c, P, 0.3, 0.5, 0.35, 1.2, 0.06, k=0.8)  # cervical spine
    return P


# -- knee --------------------------------------------------------------------
def sample_knee(rng: np.random.Generator) -> dict[str, Any]:
    return {"w": rng.uniform(0.9, 1.1), "flex": rng.uniform(0.15, 0.5), "gap": rng.uniform(0.05, 0.09),
            "mirror": bool(rng.random() < 0.5)}


def draw_knee(c: Canvas, p: dict[str, Any], view: str) -> np.ndarray:
    S = c.size
    P = np.zeros((S, S), dtype=F32)
    w, g = p["w"], p["gap"]
    m = -1.0 if p["mirror"] else 1.0
    if view == "AP":
        _soft(c, P, 0.0, -1.2, 0.0, 1.2, 0.48 * w, k=0.9)
        bone(c, P, 0.0, -1.2, 0.0, -0.3, 0.14 * w, k=1.0)
        for s in (-1.0, 1.0):
            blob(c, P, s * 0.14 * w, -0.12, 0.16 * w, 0.14, 0.35)  # condyles
        blob(c, P, 0.0, -0.25, 0.2 * w, 0.18, 0.2)
        _rrect(c, P, 0.0, 0.13 + g, 0.3 * w, 0.09, 0.3)  # tibial plateau
        bone(c, P, 0.0, 0.18 + g, 0.0, 1.2, 0.12 * w, k=1.0)
        bone(c, P, m * 0.3 * w, 0.25 + g, m * 0.26 * w, 1.2, 0.04, k=1.0)  # fibula
        blob(c, P, m * 0.3 * w, 0.22 + g, 0.06, 0.06, 0.25)
        blob(c, P, 0.0, -0.15, 0.11 * w, 0.14, 0.12)  # patella seen through the femur
    else:
        ang = p["flex"]
        dx, dy = math.sin(ang), math.cos(ang)
        _soft(c, P, 0.0, -1.2, 0.0, -0.05, 0.42 * w, k=0.9)
        _soft(c, P, 0.0, 0.0, -dx * 1.3, dy * 1.3, 0.36 * w, k=0.85)
        bone(c, P, 0.05, -1.2, 0.0, -0.25, 0.13 * w, k=1.0)
        blob(c, P, 0.02, -0.13, 0.17 * w, 0.15, 0.45)  # condyle (round on the lateral)
        _rrect(c, P, -dx * 0.12, 0.1 + g, 0.2 * w, 0.08, 0.3, ang=-ang)
        bone(c, P, -dx * 0.15, 0.12 + g, -dx * 1.3, 0.12 + dy * 1.3, 0.11 * w, k=1.0)
        blob(c, P, -0.28 * w, -0.2, 0.06, 0.14, 0.4)  # patella, anterior
    return P


# -- lumbar spine ------------------------------------------------------------
def sample_spine(rng: np.random.Generator) -> dict[str, Any]:
    return {"h": rng.uniform(0.2, 0.24), "w": rng.uniform(0.24, 0.3), "disc": rng.uniform(0.06, 0.09),
            "curve": rng.uniform(-0.06, 0.06), "lordosis": rng.uniform(0.1, 0.25),
            "gas": [(rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.8), rng.uniform(0.04, 0.12))
                    for _ in range(int(rng.integers(0, 5)))]}


def draw_spine(c: Canvas, p: dict[str, Any], view: str) -> np.ndarray:
    S = c.size
    P = np.zeros((S, S), dtype=F32)
    X = c.X
    t = np.minimum(np.abs(X) * F32(1.0 / 0.95), 1.0)
    P += dome(t * t) * F32(0.9)
    step = p["h"] + p["disc"]
    y0 = -2 * step
    for j in range(5):
        y = y0 + j * step
        u = y / 1.0
        if view == "AP":
            x = p["curve"] * (1 - u * u)
            _rrect(c, P, x, y, p["w"], p["h"] / 2, 0.25)
            for s in (-1.0, 1.0):
                ring(c, P, x + s * p["w"] * 0.7, y - p["h"] * 0.2, 0.04, 0.05, 0.15, shell=0.4)  # pedicles
                bone(c, P, x + s * p["w"] * 0.9, y, x + s * (p["w"] + 0.12), y - 0.01, 0.022, k=0.8)
            blob(c, P, x, y + p["h"] * 0.3, 0.025, 0.06, 0.15)  # spinous process
        else:
            x = 0.1 - p["lordosis"] * (1 - u * u)
            _rrect(c, P, x, y, p["w"] * 1.1, p["h"] / 2, 0.3, ang=0.15 * u)
            bone(c, P, x + p["w"] * 1.2, y, x + p["w"] * 1.2 + 0.25, y + 0.05, 0.04, k=0.7)
    if view == "AP":
        for s in (-1.0, 1.0):
            ring(c, P, s * 0.55, 0.85, 0.35, 0.3, 0.35, shell=0.12)  # iliac crests
    else:
        _rrect(c, P, 0.15, 3 * step + 0.05, 0.2, 0.12, 0.25, ang=0.5)  # sacrum
    for (x, y, r) in p["gas"]:
        blob(c, P, x, y, r, r * 0.8, -0.25)
    return P


# -- pelvis --------------------------------------------------------------------
def sample_pelvis(rng: np.random.Generator) -> dict[str, Any]:
    return {"w": rng.uniform(0.9, 1.1), "h": rng.uniform(0.9, 1.1), "sex": str(rng.choice(["F", "M"])),
            "gas": [(rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.0), rng.uniform(0.04, 0.1))
                    for _ in range(int(rng.integers(0, 5)))]}


def draw_pelvis(c: Canvas, p: dict[str, Any], view: str) -> np.ndarray:
    S = c.size
    P = np.zeros((S, S), dtype=F32)
    w, h = p["w"], p["h"]
    t = np.minimum(np.abs(c.X) * F32(1.0 / 1.05), 1.0)
    P += dome(t * t) * F32(0.9)
    wide = 1.12 if p["sex"] == "F" else 1.0
    for s in (-1.0, 1.0):
        ring(c, P, s * 0.45 * w * wide, -0.3 * h, 0.34 * w, 0.3 * h, 0.35, shell=0.15, ang=s * 0.3)  # ilium
        ring(c, P, s * 0.25 * w * wide, 0.38 * h, 0.12 * w, 0.1 * h, 0.3, shell=0.35)  # obturator ring
        bone(c, P, s * 0.04, 0.36 * h, s * 0.3 * w * wide, 0.26 * h, 0.035, k=0.9)  # pubic ramus
        x_h = s * 0.5 * w * wide
        blob(c, P, x_h, 0.12 * h, 0.13, 0.13, 0.45)  # femoral head
        bone(c, P, x_h, 0.12 * h, x_h + s * 0.17, 0.32 * h, 0.07, k=0.9)  # neck
        bone(c, P, x_h + s * 0.14, 0.3 * h, x_h + s * 0.12, 1.3, 0.11, k=1.0)  # shaft
    blob(c, P, 0.0, -0.25 * h, 0.17 * w, 0.3 * h, 0.3)  # sacrum
    _rrect(c, P, 0.0, -0.78 * h, 0.18, 0.08, 0.25)  # L5
    for (x, y, r) in p["gas"]:
        blob(c, P, x, y, r, r * 0.8, -0.25)
    return P


SAMPLERS: dict[str, Callable[[np.random.Generator], dict[str, Any]]] = {
    "hand": sample_hand, "skull": sample_skull, "knee": sample_knee,
    "spine": sample_spine, "pelvis": sample_pelvis,
}
DRAWERS: dict[str, Callable[[Canvas, dict[str, Any], str], np.ndarray]] = {
    "hand": draw_hand, "skull": draw_skull, "knee": draw_knee,
    "spine": draw_spine, "pelvis": draw_pelvis,
}
