"""Chest anatomy of the phantom: parameter sampling and frontal / lateral drawing.

A chest scene is two dicts of plain floats: the *anatomy* (per patient, with
small per-study changes such as inspiration) and the *findings* (one entry per
positive finding with its drawn geometry and severity). :func:`frontal` and
:func:`lateral` draw them as an attenuation map (see :mod:`._phantom_draw`).

Geometry in patient coordinates (frontal): lungs' outer borders at x = -W and
+W at their widest, so the thoracic width is ``2 W``; the heart's horizontal
extent is ``ctr * 2 W``, which makes the cardiothoracic ratio a drawn fact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cxrbench.datasets._phantom_draw import (
    F32,
    N_TEX,
    Canvas,
    blob,
    bone,
    dome,
    ellipse_r2,
    periodic,
    ramp,
    sample,
    seg_d2,
    texture_bank,
)

#: cardiothoracic ratio above which Cardiomegaly is labelled (the clinical 0.5)
CTR_THRESHOLD = 0.5


# -- sampling -----------------------------------------------------------------
def sample_patient(rng: np.random.Generator, sex: str, age: int) -> dict[str, Any]:
    """Per-patient chest anatomy (stable across the patient's studies)."""
    W = rng.uniform(0.60, 0.70)
    return {
        "W": W,
        "Wb": W + rng.uniform(0.10, 0.17),
        "ya": rng.uniform(-0.8, -0.7),
        "dome": rng.uniform(0.3, 0.42),
        "dome_lr": rng.uniform(0.02, 0.06),  # left dome lower than right
        "cp": rng.uniform(0.12, 0.18),  # costophrenic recess depth below the dome
        "wm": rng.uniform(0.075, 0.095),
        "heart_f": rng.uniform(0.62, 0.72),  # share of the heart left of the midline
        "heart_asp": rng.uniform(0.8, 0.95),
        "heart_tilt": rng.uniform(0.35, 0.6),
        "heart_dy": rng.uniform(-0.03, 0.05),
        "knob": rng.uniform(0.045, 0.07) * (1.0 + 0.004 * max(0, age - 40)),
        "rib_y0": rng.uniform(-0.74, -0.68),
        "rib_s": rng.uniform(0.092, 0.108),
        "rib_a": rng.uniform(0.3, 0.45),
        "rib_b": rng.uniform(1.0, 1.3),
        "clav_y": rng.uniform(-0.66, -0.58),
        "clav_tilt": rng.uniform(-0.12, 0.0),
        "spine_w": rng.uniform(0.04, 0.05),
        "vert_p": rng.uniform(0.075, 0.09),
        "tex": int(rng.integers(N_TEX)),
        "tex_dx": rng.uniform(-0.04, 0.04),
        "tex_dy": rng.uniform(-0.04, 0.04),
        "tex_flip": bool(rng.random() < 0.5),
        "marking_k": rng.uniform(0.07, 0.13),
        "lung_k": rng.uniform(0.65, 0.8),  # how much air darkens the lungs
        "arm": rng.uniform(0.06, 0.2) if rng.random() < 0.3 else 1.0,
        "bubble": rng.uniform(0.03, 0.08) if rng.random() < 0.7 else 0.0,
        "breast": rng.uniform(0.08, 0.16) if sex == "F" else 0.0,
        "ctr_base": 0.0,  # set from the finding latent (see phantom.py)
        # lateral view
        "ap_depth": rng.uniform(0.62, 0.74),
        "kyph": rng.uniform(0.0, 0.08),
    }


def study_jitter(anat: dict[str, Any], rng: np.random.Generator, view: str) -> dict[str, Any]:
    """Small per-study changes: inspiration depth (diaphragm level), AP effects."""
    a = dict(anat)
    insp = rng.normal(0.0, 0.025)
    if view == "AP":  # supine / bedside: shallower inspiration, higher clavicles
        insp -= 0.05
        a["clav_y"] -= 0.06
        a["clav_tilt"] += 0.05
    a["dome"] = anat["dome"] - insp
    a["supine"] = view == "AP"
    return a


def sample_finding_geometry(name: str, rng: np.random.Generator, anat: dict[str, Any]) -> dict[str, Any]:
    """Where and how a finding is drawn for a patient (stable across studies)."""
    W = anat["W"]
    side = -1.0 if rng.random() < 0.55 else 1.0  # -1: patient's right (image left)
    if name == "Effusion":
        u = rng.random()
        sides = [-1.0] if u < 0.45 else [1.0] if u < 0.75 else [-1.0, 1.0]
        return {"sides": sides, "meniscus": rng.uniform(0.5, 1.0)}
    if name == "Pneumothorax":
        return {"side": side}
    if name in ("Nodule", "Mass"):
        k = 1 if name == "Mass" else int(rng.choice([1, 1, 1, 2, 3]))
        spots = []
        for _ in range(k):
            s = -1.0 if rng.random() < 0.5 else 1.0
            # inside the lung: away from the heart on the left, above the bases
            x = s * W * rng.uniform(0.3, 0.85)
            y = rng.uniform(anat["ya"] + 0.15, anat["dome"] - 0.08)
            spots.append((x, y, rng.uniform(0.0, math.pi), rng.uniform(0.8, 1.2)))
        return {"spots": spots, "lobes": [(rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5),
                                           rng.uniform(0.5, 0.8)) for _ in range(3)]}
    if name == "Consolidation":
        lower = rng.random() < 0.65
        y = rng.uniform(0.0, anat["dome"] - 0.05) if lower else rng.uniform(anat["ya"] + 0.12, -0.1)
        return {"x": side * W * rng.uniform(0.4, 0.75), "y": y, "tex": int(rng.integers(N_TEX)),
                "asp": rng.uniform(0.7, 1.3)}
    if name == "Atelectasis":
        return {"side": side, "x": side * W * rng.uniform(0.35, 0.65),
                "y": anat["dome"] - rng.uniform(0.08, 0.2), "ang": rng.uniform(-0.35, 0.35)}
    if name == "Cardiomegaly":
        return {}
    raise KeyError(name)


# -- frontal drawing ---------------------------------------------------------
def _diaphragm(a: dict[str, Any], s: float, elev: float = 0.0) -> tuple[float, float, float]:
    """(dome level, recess level, curvature) of the hemidiaphragm on side s."""
    W = a["W"]
    d = a["dome"] + (a["dome_lr"] if s > 0 else 0.0) - elev
    cp = d + a["cp"]
    k = a["cp"] / (0.55 * W) ** 2
    return d, cp, k


def _lung(a: dict[str, Any], s: float, X: np.ndarray, Y: np.ndarray, d: float, cp: float,
          k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One lung (side s) on a patch: (air depth in [0, 1], distance to the chest wall, height t).

    The outer border runs from the apex (t = 0) out to ``W`` by t ~ 0.75 and
    stays there to the costophrenic recess (t = 1); the inner border reaches
    the midline by t ~ 0.4, where the mediastinum and heart take over.
    """
    W = a["W"]
    ya = a["ya"]
    apx = 0.42 * W
    t = (Y - F32(ya)) * F32(1.0 / (cp - ya))
    np.clip(t, 0.0, 1.0, out=t)
    q = np.minimum(t * F32(1.0 / 0.75), 1.0)
    q = F32(1.0) - q
    lat = F32(apx) + F32(W - apx) * np.sqrt(F32(1.0) - q * q)
    lat -= F32(0.04 * W) * np.maximum(t - F32(0.8), 0.0) * F32(5.0)
    q = np.minimum(t * F32(1.0 / 0.4), 1.0)
    q = F32(1.0) - q
    med = F32(apx) - F32(apx) * np.sqrt(F32(1.0) - q * q)
    ax = X * F32(s)
    d_lat = lat - ax
    d_med = ax - med
    dw = np.minimum(d_lat, d_med + F32(10.0) * np.maximum(t - F32(0.35), 0.0))
    depth = ramp(np.minimum(d_lat, d_med), 0.14)
    np.sqrt(depth, out=depth)
    depth *= ramp(Y - F32(ya), 0.03)
    aa = ax - F32(0.45 * W)
    yd = F32(d) + F32(k) * aa * aa
    depth *= ramp(yd - Y, 0.025)
    return depth, dw, t


def heart_geometry(a: dict[str, Any], mshift: float = 0.0) -> dict[str, float]:
    """Heart ellipse (centre, semi-axes, tilt) whose width is ctr * 2W exactly."""
    W = a["W"]
    wh = a["ctr"] * 2.0 * W
    th = a["heart_tilt"]
    asp = a["heart_asp"]
    ha = (wh / 2.0) / math.sqrt(math.cos(th) ** 2 + (asp * math.sin(th)) ** 2)
    hb = ha * asp
    ext_y = math.sqrt((ha * math.sin(th)) ** 2 + (hb * math.cos(th)) ** 2)
    d_left = a["dome"] + a["dome_lr"]
    cx = mshift + (a["heart_f"] - 0.5) * wh
    cy = d_left + 0.03 - 0.45 * ext_y + a["heart_dy"]
    return {"cx": cx, "cy": cy, "a": ha, "b": hb, "tilt": th, "width": wh, "ext_y": ext_y}


def frontal(c: Canvas, a: dict[str, Any], f: dict[str, dict[str, Any]],
            layers: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Attenuation map of a frontal (PA/AP) chest film."""
    X, Y = c.X, c.Y
    S = c.size
    W, Wb = a["W"], a["Wb"]
    vessels, noise = texture_bank(S)

    atel = f.get("Atelectasis")
    elev = {-1.0: 0.0, 1.0: 0.0}
    mshift = 0.0
    if atel:
        elev[atel["side"]] = 0.03 + 0.07 * atel["sev"]
        mshift = atel["side"] * (0.006 + 0.03 * atel["sev"])

    # body: a tube (thickness ~ sqrt(1 - (x/Wb)^2)) below the shoulders, plus the neck
    ax = np.abs(X)
    yy = Y - F32(0.2)
    t = ax * F32(1.0 / Wb) * (F32(1.0) + F32(0.07) * yy * yy)
    np.minimum(t, 1.0, out=t)
    body = dome(t * t)
    y_top = F32(-0.86) + F32(0.22) * t * t
    body *= ramp(Y - y_top, 0.08)
    sl, Xs, Ys = c.sub(-0.2, 0.2, -1.5, -0.45)
    if sl is not None:
        neck = dome((Xs * F32(1 / 0.17)) ** 2) * ramp(F32(-0.6) - Ys, 0.1)
        np.maximum(body[sl], neck, out=body[sl])
    P = body  # soft tissue, ~1 at the thickest
    # arms and shoulders at the edges of the field
    for s in (-1.0, 1.0):
        ao = a["arm"]
        sl, Xs, Ys = c.sub(s * (Wb + ao) - 0.2, s * (Wb + ao) + 0.35, -0.95, 0.5)
        if sl is not None:
            arm = F32(0.5) * dome(seg_d2(Xs, Ys, s * (Wb + ao - 0.02), -0.7, s * (Wb + ao + 0.1), 0.5)
                                   * F32(1 / 0.13 ** 2))
            np.maximum(P[sl], arm, out=P[sl])
        if ao < 0.5:
            bone(c, P, s * (Wb + ao - 0.01), -0.66, s * (Wb + ao + 0.07), 0.45, 0.045, k=0.5)
            blob(c, P, s * (Wb - 0.03), -0.7, 0.08, 0.085, 0.16)

    # lungs: air thickness L in [0, 1]
    L = np.zeros((S, S), dtype=F32)
    lung_boxes = {}
    for s in (-1.0, 1.0):
        d, cp, k = _diaphragm(a, s, elev[s])
        sl, Xs, Ys = c.sub(min(0.0, s * (W + 0.02)), max(0.0, s * (W + 0.02)), a["ya"] - 0.02, cp + 0.02)
        lung_boxes[s] = (sl, d, cp, k)
        if sl is None:
            continue
        depth, _, _ = _lung(a, s, Xs, Ys, d, cp, k)
        L[sl] += depth
    L_raw = L.copy()
    if layers is not None:
        layers["lungs_raw"] = L_raw
    # everything that involves the lungs happens inside this box (the rest stays 0)
    boxes = [b[0] for b in lung_boxes.values() if b[0] is not None]
    tb = (slice(min(b[0].start for b in boxes), max(b[0].stop for b in boxes)),
          slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes))) if boxes \
        else (slice(0, 0), slice(0, 0))

    # heart and mediastinum occlude the lungs
    h = heart_geometry(a, mshift)
    hm = max(h["a"], h["b"]) * 1.05
    sl, Xs, Ys = c.sub(h["cx"] - hm, h["cx"] + hm, h["cy"] - hm, h["cy"] + hm)
    heart = np.zeros((S, S), dtype=F32)
    if sl is not None:
        heart[sl] = ramp(F32(1.0) - ellipse_r2(Xs, Ys, h["cx"], h["cy"], h["a"], h["b"], h["tilt"]),
                         0.08)
    if layers is not None:
        layers["heart"] = heart
    med_top = -1.2
    sl, Xs, Ys = c.sub(mshift - 0.25, mshift + 0.25, med_top, h["cy"])
    med = np.zeros((S, S), dtype=F32)
    if sl is not None:
        xm = Xs - F32(mshift)
        wm = F32(a["wm"]) + F32(0.07) * ramp(Ys + F32(0.25), 0.45)
        m = ramp(wm - np.abs(xm), 0.02)
        knob = ramp(F32(1.0) - ellipse_r2(Xs, Ys, mshift + a["wm"] + 0.015, -0.36, a["knob"],
                                          a["knob"] * 1.1), 0.15)
        np.maximum(m, knob, out=m)
        med[sl] = m
    L[tb] *= F32(1.0) - np.maximum(heart[tb], med[tb])
    L_vis = L.copy()  # lungs as the ribs are seen against them

    # findings that replace air (fluid, consolidation, collapse, nodules)
    opac = np.zeros((S, S), dtype=F32)
    eff = f.get("Effusion")
    if eff:
        for s in eff["sides"]:
            sl, d, cp, k = lung_boxes[s]
            if sl is None:
                continue
            Xs, Ys = c.X[sl], c.Y[sl]
            height = 0.06 + 0.55 * eff["sev"] ** 0.7
            level = cp - height
            aa = np.clip(Xs * F32(s) * F32(1.0 / W), 0.0, 1.0)
            surf = F32(level) + F32(eff["meniscus"] * (0.1 + height)) * (F32(1.0) - aa) ** 2
            fl = ramp(Ys - surf, 0.04 + 0.15 * eff["sev"])
            if a.get("supine"):
                # lying down, fluid layers behind the lung: a veil over the hemithorax
                fl = np.maximum(fl * F32(0.7), F32(0.3 * eff["sev"]) * ramp(Ys - F32(a["ya"]), 0.6))
            np.maximum(opac[sl], fl * F32(0.95), out=opac[sl])
    con = f.get("Consolidation")
    if con:
        r = 0.08 + 0.22 * con["sev"]
        sl, Xs, Ys = c.sub(con["x"] - r * 1.6, con["x"] + r * 1.6, con["y"] - r * 1.6, con["y"] + r * 1.6)
        if sl is not None:
            env = dome(ellipse_r2(Xs, Ys, con["x"], con["y"], r * con["asp"], r / con["asp"]))
            nz = sample(noise[con["tex"]], c, sl)
            patch = env * (F32(0.9) + F32(0.5) * nz)
            np.clip(patch * F32(0.45 + 0.5 * con["sev"]), 0, 0.9, out=patch)
            np.maximum(opac[sl], patch, out=opac[sl])
    if atel:
        ln = 0.12 + 0.2 * atel["sev"]
        wd = 0.012 + 0.025 * atel["sev"]
        dx, dy = math.cos(atel["ang"]) * ln, math.sin(atel["ang"]) * ln
        x0, y0 = atel["x"] - dx, atel["y"] - elev[atel["side"]] - dy
        x1, y1 = atel["x"] + dx, atel["y"] - elev[atel["side"]] + dy
        sl, Xs, Ys = c.sub(min(x0, x1) - 0.08, max(x0, x1) + 0.08, min(y0, y1) - 0.08, max(y0, y1) + 0.08)
        if sl is not None:
            band = ramp(F32(1.0) - seg_d2(Xs, Ys, x0, y0, x1, y1) * F32(1.0 / wd ** 2), 0.5)
            band *= F32(0.35 + 0.3 * atel["sev"])
            np.maximum(opac[sl], band, out=opac[sl])
    for name, rmin, rmax in (("Nodule", 0.012, 0.035), ("Mass", 0.05, 0.11)):
        g = f.get(name)
        if not g:
            continue
        sev = g["sev"]
        for (x, y, ang, scl) in g["spots"]:
            r = (rmin + (rmax - rmin) * sev) * scl
            lobes = g["lobes"] if name == "Mass" else [(0.0, 0.0, 1.0)]
            sl, Xs, Ys = c.sub(x - 2 * r, x + 2 * r, y - 2 * r, y + 2 * r)
            if sl is None:
                continue
            for (ox, oy, rs) in lobes:
                lob = dome(ellipse_r2(Xs, Ys, x + ox * r, y + oy * r, r * rs * 1.1, r * rs * 0.9, ang))
                lob = np.minimum(lob * F32(2.5), 1.0) * F32(0.35 + 0.45 * sev)
                np.maximum(opac[sl], lob, out=opac[sl])
    if layers is not None:
        layers["opacity"] = opac
    L[tb] *= F32(1.0) - opac[tb]

    # lung markings and parenchyma; a pneumothorax removes both at the chest wall
    mark = np.zeros((S, S), dtype=F32)
    for s in (-1.0, 1.0):
        sl = lung_boxes[s][0]
        if sl is None:
            continue
        Xs, Ys = c.X[sl], c.Y[sl]
        v = sample(vessels[a["tex"]], c, sl, a["tex_dx"], a["tex_dy"], a["tex_flip"])
        mark[sl] = v
    paren = np.zeros((S, S), dtype=F32)
    Lt = L[tb]
    paren[tb] = Lt * F32(0.12) + mark[tb] * F32(a["marking_k"]) * np.minimum(Lt * F32(3.0), 1.0)
    ptx = f.get("Pneumothorax")
    if ptx:
        s = ptx["side"]
        sl = lung_boxes[s][0]
        if sl is not None:
            Xs, Ys = c.X[sl], c.Y[sl]
            gap = 0.03 + 0.3 * ptx["sev"] ** 1.3
            # gas rises: the lung edge lies further from the chest wall at the apex
            d, cp, k = _diaphragm(a, s, elev[s])
            _, dw, tt = _lung(a, s, Xs, Ys, d, cp, k)
            dw -= F32(gap) * (F32(1.0) - F32(0.7) * tt)  # < 0: free pleural gas
            free = ramp(-dw, 0.01)
            free *= np.minimum(L[sl] * F32(4), 1.0)
            if layers is not None:
                layers["pneumothorax"] = np.zeros((S, S), dtype=F32)
                layers["pneumothorax"][sl] = free
            line = ramp(F32(1.0) - np.abs(dw) * F32(c.px * 0.9), 1.0)
            line *= np.minimum(L[sl] * F32(4), 1.0) * (F32(1.0) - free)
            paren[sl] *= F32(1.0) - free
            paren[sl] += line * F32(0.12)
            # the collapsed lung is a little denser; free gas a little more lucent
            L[sl] += free * F32(0.15)

    Pt = P[tb]
    Pt -= L[tb] * F32(a["lung_k"])
    Pt += paren[tb]
    # fluid / tissue where there was lung is a little denser than the lung it replaced
    Pt += opac[tb] * F32(0.15) * np.minimum(L_vis[tb] * F32(4), 1.0)

    # trachea and main bronchi (air in the mediastinum)
    ycar = -0.3
    sl, Xs, Ys = c.sub(mshift - 0.1, mshift + 0.1, -1.2, ycar)
    if sl is not None:
        tr = ramp(F32(0.032) - np.abs(Xs - F32(mshift * 0.6)), 0.012)
        P[sl] -= tr * F32(0.3)
    for s in (-1.0, 1.0):
        sl, Xs, Ys = c.sub(mshift + min(0, s * 0.16), mshift + max(0, s * 0.16), ycar - 0.03, ycar + 0.14)
        if sl is not None:
            br = ramp(F32(1.0) - seg_d2(Xs, Ys, mshift, ycar, mshift + s * 0.13, ycar + 0.11)
                      * F32(1 / 0.018 ** 2), 0.5)
            P[sl] -= br * F32(0.15)
    # hila
    for s in (-1.0, 1.0):
        blob(c, P, mshift + s * (a["wm"] + 0.07), -0.12, 0.06, 0.09, 0.12)

    # bones: spine, ribs, clavicles
    sw = a["spine_w"]
    sl, Xs, Ys = c.sub(-sw * 2, sw * 2, -1.2, 1.2)
    if sl is not None:
        sp = dome((Xs * F32(1.0 / sw)) ** 2)
        ph = periodic(Ys * F32(1.0 / a["vert_p"]))
        sp *= F32(0.8) + F32(0.2) * ph
        P[sl] += sp * F32(0.045)
    cp_max = max(_diaphragm(a, -1.0)[1], _diaphragm(a, 1.0)[1])
    sl, Xs, Ys = c.sub(-W - 0.1, W + 0.1, a["rib_y0"] - 0.05, cp_max + 0.12)
    if sl is not None:
        ax = np.abs(Xs)
        fy = Ys - F32(a["rib_y0"]) + F32(a["rib_a"]) * ax - F32(a["rib_b"]) * ax * ax
        q = fy * F32(1.0 / a["rib_s"])
        q *= F32(1.0) - F32(0.03) * q
        post = periodic(q)
        post = ramp(post - F32(0.1), 0.5)
        post *= ramp(q + F32(0.25), 0.2) * ramp(F32(10.0) - q, 0.2)
        post *= ramp(ax - F32(sw * 1.1), 0.02) * ramp(F32(W + 0.06) - ax, 0.04)
        # anterior ribs: fainter, sloping down towards the midline
        q2 = (Ys - F32(a["rib_y0"] + 0.12) - F32(0.45) * (F32(W) - ax)) * F32(1.0 / (a["rib_s"] * 1.1))
        ant = ramp(periodic(q2) - F32(0.3), 0.5)
        ant *= ramp(q2 + F32(0.2), 0.2) * ramp(F32(6.0) - q2, 0.2)
        ant *= ramp(ax - F32(0.3), 0.15) * ramp(F32(W + 0.04) - ax, 0.04)
        fade = np.minimum(body[sl] * F32(3), 1.0) * ramp(F32(cp_max + 0.1) - Ys, 0.15)
        fade *= F32(0.4) + F32(0.6) * np.minimum(L_vis[sl] * F32(2), 1.0)
        P[sl] += (post * F32(0.1) + ant * F32(0.045)) * fade
    for s in (-1.0, 1.0):
        cy0 = a["clav_y"]
        xm, ym = s * 0.32, cy0 - 0.02 + a["clav_tilt"] * 0.3
        xl, yl = s * 0.62, cy0 - 0.06 + a["clav_tilt"]
        bone(c, P, s * 0.06, cy0 + 0.02, xm, ym, 0.026, k=1.6)
        bone(c, P, xm, ym, xl, yl, 0.022, k=1.6)

    # below the diaphragm: gastric bubble; breast shadows over the bases
    if a["bubble"] > 0:
        d, cp, k = _diaphragm(a, 1.0, elev[1.0])
        blob(c, P, 0.35 * W + mshift, d + a["bubble"] * 1.2, a["bubble"] * 1.4, a["bubble"], -0.25)
    if a["breast"] > 0:
        for s in (-1.0, 1.0):
            d = _diaphragm(a, s)[0]
            bx, by, ba, bb = s * 0.52 * W, d - 0.02, 0.4, 0.28
            sl, Xs, Ys = c.sub(bx - ba, bx + ba, by - bb, by + bb)
            if sl is not None:
                br = dome(ellipse_r2(Xs, Ys, bx, by, ba, bb))
                np.sqrt(br, out=br)  # a fuller lower contour (the inframammary fold)
                br *= ramp(Xs * F32(s), 0.3)  # fades towards the midline
                P[sl] += br * F32(a["breast"])
    if layers is not None:
        layers["air"] = L
    return P


# -- lateral drawing ---------------------------------------------------------
def lateral_heart(a: dict[str, Any]) -> dict[str, float]:
    """Heart ellipse on the lateral film; it scales with the patient's ctr."""
    D = a["ap_depth"]
    kc = a["ctr"] / 0.45
    return {"cx": -0.3 * D + 0.04 * kc, "cy": a["dome"] - 0.14, "a": 0.27 * kc, "b": 0.21 * kc,
            "tilt": -0.6}


def lateral(c: Canvas, a: dict[str, Any], f: dict[str, dict[str, Any]],
            layers: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Attenuation map of a lateral chest film (patient facing the image left)."""
    X, Y = c.X, c.Y
    S = c.size
    D = a["ap_depth"]  # half depth of the chest, front to back
    vessels, noise = texture_bank(S)
    # body: the lateral path length falls off towards the front and back surfaces
    t = (X - F32(0.03)) * F32(1.0 / (D + 0.1))
    np.clip(t, -1.0, 1.0, out=t)
    P = dome(t * t)
    P *= ramp(Y + F32(0.9), 0.12)
    neck = dome(((X - F32(0.1)) * F32(1 / 0.22)) ** 2) * ramp(F32(-0.5) - Y, 0.1)
    np.maximum(P, neck, out=P)
    # arms raised in front of the face: soft tissue and humeri over the apices
    sl, Xs, Ys = c.sub(-D - 0.2, D * 0.5, -1.2, -0.2)
    if sl is not None:
        P[sl] += F32(0.3) * dome(seg_d2(Xs, Ys, -0.45, -1.15, -0.05, -0.4) * F32(1 / 0.15 ** 2))
    bone(c, P, -0.42, -1.15, -0.08, -0.45, 0.045, k=0.6)

    dm = a["dome"]
    ytop = a["ya"] - 0.02
    sl, Xs, Ys = c.sub(-D, D, ytop, dm + 0.45)
    L = np.zeros((S, S), dtype=F32)
    if sl is not None:
        ya = a["ya"]
        t = (Ys - F32(ya)) * F32(1.0 / (dm + 0.4 - ya))
        np.clip(t, 0.0, 1.0, out=t)
        x0 = 0.08
        q = F32(1.0) - np.minimum(t * F32(1.0 / 0.35), 1.0)
        ant = F32(x0) - F32(x0 + D - 0.06) * np.sqrt(F32(1.0) - q * q)
        q = F32(1.0) - np.minimum(t * F32(1.0 / 0.5), 1.0)
        post = F32(x0) + F32(D - 0.04 - x0) * np.sqrt(F32(1.0) - q * q)
        depth = np.sqrt(ramp(np.minimum(Xs - ant, post - Xs), 0.14))
        depth *= ramp(Ys - F32(ya), 0.03)
        xx = Xs * F32(1.0 / D)
        yd = F32(dm - 0.02) + F32(0.1) * xx + F32(0.9) * np.maximum(xx - F32(0.25), 0) ** 2
        depth *= ramp(yd - Ys, 0.03)
        L[sl] = depth
    h = lateral_heart(a)
    sl, Xs, Ys = c.sub(h["cx"] - 0.5, h["cx"] + 0.5, h["cy"] - 0.5, h["cy"] + 0.5)
    heart = np.zeros((S, S), dtype=F32)
    if sl is not None:
        heart[sl] = ramp(F32(1.0) - ellipse_r2(Xs, Ys, h["cx"], h["cy"], h["a"], h["b"], h["tilt"]), 0.12)
    if layers is not None:
        layers["heart"] = heart
    L *= F32(1.0) - heart * F32(0.8)
    L_vis = L.copy()
    opac = np.zeros((S, S), dtype=F32)
    eff = f.get("Effusion")
    if eff:
        # fluid fills the posterior costophrenic sulcus first, meniscus rising posteriorly
        height = 0.06 + 0.55 * eff["sev"] ** 0.7
        xx = X * F32(1.0 / D)
        surf = F32(dm + 0.3 - height) - F32(0.15 * eff["meniscus"]) * np.clip(xx + F32(0.3), 0, 1.3)
        np.maximum(opac, ramp(Y - surf, 0.04 + 0.15 * eff["sev"]) * F32(0.9), out=opac)
    con = f.get("Consolidation")
    if con:
        r = 0.08 + 0.22 * con["sev"]
        x = con["x"] * 0.4
        sl, Xs, Ys = c.sub(x - 2 * r, x + 2 * r, con["y"] - 2 * r, con["y"] + 2 * r)
        if sl is not None:
            env = dome(ellipse_r2(Xs, Ys, x, con["y"], r * con["asp"], r / con["asp"]))
            patch = env * (F32(0.9) + F32(0.5) * sample(noise[con["tex"]], c, sl))
            np.clip(patch * F32(0.45 + 0.5 * con["sev"]), 0, 0.9, out=patch)
            np.maximum(opac[sl], patch, out=opac[sl])
    for name, rmin, rmax in (("Nodule", 0.012, 0.035), ("Mass", 0.05, 0.11)):
        g = f.get(name)
        if not g:
            continue
        for (x, y, ang, scl) in g["spots"]:
            r = (rmin + (rmax - rmin) * g["sev"]) * scl
            blob(c, opac, x * 0.5, y, r, r, 0.35 + 0.45 * g["sev"])
    atel = f.get("Atelectasis")
    if atel:
        wd = 0.012 + 0.025 * atel["sev"]
        sl, Xs, Ys = c.sub(-0.5, 0.5, atel["y"] - 0.2, atel["y"] + 0.2)
        if sl is not None:
            band = ramp(F32(1.0) - seg_d2(Xs, Ys, -0.3, atel["y"] - 0.05, 0.3, atel["y"] + 0.08)
                        * F32(1.0 / wd ** 2), 0.5)
            np.maximum(opac[sl], band * F32(0.35 + 0.3 * atel["sev"]), out=opac[sl])
    np.minimum(opac, 1.0, out=opac)
    if layers is not None:
        layers["opacity"] = opac
    L *= F32(1.0) - opac
    sl = c.roi(-D, D, ytop, dm + 0.45)
    if sl is not None:
        mk = sample(vessels[a["tex"]], c, sl, flip=a["tex_flip"], sx=0.8)
        P[sl] += mk * F32(a["marking_k"]) * np.minimum(L[sl] * F32(3), 1.0)
    P -= L * F32(a["lung_k"])
    P += L * F32(0.12) + opac * F32(0.1)
    blob(c, P, 0.02, -0.1, 0.1, 0.12, 0.12)  # hila
    # trachea
    sl, Xs, Ys = c.sub(-0.3, 0.2, -1.2, -0.15)
    if sl is not None:
        tr = ramp(F32(1.0) - seg_d2(Xs, Ys, -0.1, -1.1, 0.04, -0.18) * F32(1 / 0.03 ** 2), 0.4)
        P[sl] -= tr * F32(0.12)
    # spine (posterior): vertebral bodies with discs, posterior elements; sternum (anterior)
    x_sp = D * 0.68
    sl, Xs, Ys = c.sub(x_sp - 0.25, x_sp + 0.35, -1.2, 1.2)
    if sl is not None:
        xs = Xs - F32(x_sp) - F32(a["kyph"]) * (F32(1.0) - Ys * Ys)
        col = ramp(F32(0.085) - np.abs(xs), 0.015)
        ph = periodic(Ys * F32(1.0 / a["vert_p"]))
        col *= F32(0.55) + F32(0.45) * ramp(ph + F32(0.8), 0.2)
        post = ramp(F32(0.045) - np.abs(xs - F32(0.15)), 0.03) * ramp(ph + F32(0.1), 0.4)
        P[sl] += (col * F32(0.22) + post * F32(0.1)) * np.minimum(P[sl] * F32(3), 1.0)
    bone(c, P, -D + 0.02, -0.58, -D + 0.07, 0.12, 0.022, k=1.2)
    if layers is not None:
        layers["air"] = L
        layers["lungs_vis"] = L_vis
    return P
