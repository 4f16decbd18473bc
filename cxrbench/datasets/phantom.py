"""Phantom radiographs: procedural chest films with findings, plus other body regions.

The built-in, offline dataset (the default of ``cxrbench run``). It is *not*
clinical data and supports no clinical claim: it exists to check pipelines,
run CI and test scale (any ``n`` up to millions, images drawn on the fly from
a seed). See docs/phantom.md.

What is drawn:

* chest films (PA, AP, lateral) with per-patient anatomy (body, lungs, heart,
  mediastinum, trachea, spine, ribs, clavicles, diaphragm, gastric bubble,
  breast shadows, arms) and per-image acquisition (position, rotation,
  magnification, exposure, contrast, gamma, noise, blur, collimation, burned-in
  markers);
* findings as multi-labels with configurable prevalence, each drawn where a
  reader would look: Cardiomegaly (cardiothoracic ratio > 0.5 exactly when
  labelled), Effusion (basal opacity with a meniscus, blunted costophrenic
  angle), Pneumothorax (pleural gas without lung markings at the apex and
  chest wall, visceral pleural line), Nodule, Mass, Consolidation,
  Atelectasis (plate-like band, raised hemidiaphragm, mediastinal shift);
  severity is uniform in (0, 1], so some cases are subtle;
* patients with several studies over time (anatomy and finding locations are
  per patient; findings persist with a per-finding probability), so follow-ups
  resemble each other and same-patient exclusion matters;
* hand, skull, knee, lumbar spine and pelvis films with IRMA codes; their chest
  labels are *unknown* (-1): a chest finding cannot be assessed on a hand.

Example:
    >>> from cxrbench.datasets.phantom import PhantomDataset
    >>> ds = PhantomDataset(n=100, size=64, seed=1)
    >>> ds.load_image(0).shape
    (64, 64)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from scipy.special import ndtr, ndtri

from cxrbench.datasets import DATASETS
from cxrbench.datasets._phantom_chest import (
    CTR_THRESHOLD,
    frontal,
    lateral,
    sample_finding_geometry,
    sample_patient,
    study_jitter,
)
from cxrbench.datasets._phantom_draw import Canvas, finish
from cxrbench.datasets._phantom_regions import DRAWERS, IRMA_CODES, REGION_VIEWS, SAMPLERS
from cxrbench.datasets.base import UNKNOWN, Dataset, Index

#: bump when a change alters any pixel or label for the same parameters
GENERATOR_VERSION = "phantom-1"

FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Effusion", "Mass", "Nodule",
            "Pneumothorax")
LABELS = FINDINGS + ("No Finding",)

#: per chest study; roughly a hospital chest-film population (NIH ChestX-ray14
#: has 54% "No Finding"; these defaults give about 56%)
DEFAULT_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.10, "Cardiomegaly": 0.10, "Consolidation": 0.06, "Effusion": 0.12,
    "Mass": 0.05, "Nodule": 0.06, "Pneumothorax": 0.05,
}
#: correlation of the findings' latent scores (Gaussian copula): effusion goes
#: with cardiomegaly and atelectasis, consolidation with effusion ...
CORRELATION: dict[tuple[str, str], float] = {
    ("Cardiomegaly", "Effusion"): 0.35, ("Atelectasis", "Effusion"): 0.3,
    ("Consolidation", "Effusion"): 0.2, ("Atelectasis", "Consolidation"): 0.2,
    ("Mass", "Nodule"): 0.15,
}
#: share of a finding's latent score that is the patient's (chronic findings persist)
PERSISTENCE: dict[str, float] = {
    "Atelectasis": 0.4, "Cardiomegaly": 0.75, "Consolidation": 0.3, "Effusion": 0.6,
    "Mass": 0.85, "Nodule": 0.85, "Pneumothorax": 0.3,
}
REGIONS = ("chest",) + tuple(SAMPLERS)
_REGION_WEIGHTS = {"hand": 0.25, "skull": 0.2, "knee": 0.2, "spine": 0.2, "pelvis": 0.15}
_BLOCK = 4096  # patients per random block: the index is prefix-stable in n


def irma_tree_path() -> Path:
    """Folder of the phantom's IRMA code hierarchy (A.csv..D.csv, ``prefix;label``)."""
    return Path(__file__).resolve().parent.parent / "data" / "phantom_irma"


def _parse_prevalence(prevalence: Any, extra: Mapping[str, Any]) -> dict[str, float]:
    """Merge defaults, a dict (or ``"Effusion=0.3,Nodule=0.1"``) and ``prevalence.X`` params."""
    out = dict(DEFAULT_PREVALENCE)
    items: list[tuple[str, Any]] = []
    if isinstance(prevalence, str):
        for part in filter(None, (p.strip() for p in prevalence.split(","))):
            if "=" not in part:
                raise ValueError(f"phantom: prevalence {prevalence!r}: expected Name=value pairs")
            k, v = part.split("=", 1)
            items.append((k.strip(), v))
    elif isinstance(prevalence, Mapping):
        items.extend(prevalence.items())
    elif prevalence is not None:
        raise ValueError(f"phantom: prevalence must be a mapping finding -> rate, got {prevalence!r}")
    for key, v in extra.items():
        if not key.startswith("prevalence."):
            valid = ["n", "size", "seed", "prevalence", "prevalence.<Finding>", "non_chest_fraction",
                     "test_fraction", "val_fraction", "lateral_fraction", "ap_fraction", "mean_studies"]
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"phantom: unknown parameter {key!r}.{hint} Valid: {', '.join(valid)}")
        items.append((key[len("prevalence."):], v))
    lower = {f.lower().replace(" ", "_"): f for f in FINDINGS}
    for k, v in items:
        name = lower.get(str(k).strip().lower().replace(" ", "_"))
        if name is None:
            close = difflib.get_close_matches(str(k), FINDINGS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"phantom: unknown finding {k!r} in prevalence.{hint} "
                             f"Valid: {', '.join(FINDINGS)}")
        p = float(v)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"phantom: prevalence of {name} must be in [0, 1), got {p}")
        out[name] = p
    return out


def _copula_factor() -> np.ndarray:
    """Cholesky factor of the findings' latent correlation matrix."""
    k = len(FINDINGS)
    C = np.eye(k)
    for (a, b), r in CORRELATION.items():
        i, j = FINDINGS.index(a), FINDINGS.index(b)
        C[i, j] = C[j, i] = r
    return np.linalg.cholesky(C)


@DATASETS.register("phantom")
class PhantomDataset(Dataset):
    """Synthetic radiographs (chest findings, follow-ups, other regions, IRMA codes), offline, any n."""

    name = "phantom"
    label_names = LABELS

    def __init__(
        self,
        root: str | None = None,
        n: int = 2000,
        size: int = 256,
        seed: int = 0,
        prevalence: Mapping[str, float] | str | None = None,
        non_chest_fraction: float = 0.1,
        test_fraction: float = 0.2,
        val_fraction: float = 0.0,
        lateral_fraction: float = 0.15,
        ap_fraction: float = 0.3,
        mean_studies: float = 3.0,
        **extra: Any,
    ) -> None:
        prev = _parse_prevalence(prevalence, extra)
        checks = {"non_chest_fraction": non_chest_fraction, "test_fraction": test_fraction,
                  "val_fraction": val_fraction, "lateral_fraction": lateral_fraction,
                  "ap_fraction": ap_fraction}
        for k, v in checks.items():
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"phantom: {k} must be in [0, 1], got {v}")
        if float(test_fraction) + float(val_fraction) > 1.0:
            raise ValueError("phantom: test_fraction + val_fraction must be at most 1")
        if int(n) < 1 or int(size) < 16:
            raise ValueError(f"phantom: need n >= 1 and size >= 16, got n={n}, size={size}")
        if float(mean_studies) < 1.0:
            raise ValueError(f"phantom: mean_studies must be >= 1, got {mean_studies}")
        super().__init__(
            root, n=int(n), size=int(size), seed=int(seed), prevalence=prev,
            non_chest_fraction=float(non_chest_fraction), test_fraction=float(test_fraction),
            val_fraction=float(val_fraction), lateral_fraction=float(lateral_fraction),
            ap_fraction=float(ap_fraction), mean_studies=float(mean_studies),
        )
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.prevalence = prev
        self.non_chest_fraction = float(non_chest_fraction)
        self.test_fraction, self.val_fraction = float(test_fraction), float(val_fraction)
        self.lateral_fraction, self.ap_fraction = float(lateral_fraction), float(ap_fraction)
        self.mean_studies = float(mean_studies)
        self._cols: dict[str, np.ndarray] = {}

    def content_key(self) -> str:
        return GENERATOR_VERSION

    # -- the index ---------------------------------------------------------------
    def _block(self, b: int) -> dict[str, np.ndarray]:
        """Patients b*_BLOCK .. (b+1)*_BLOCK-1 and all their images (vectorised)."""
        rng = np.random.default_rng([self.seed, 0, b])
        m = _BLOCK
        # a non-chest patient has one study of ~1.35 images; weight patients so that
        # the expected share of non-chest *images* is non_chest_fraction
        m_c, m_nc = self.mean_studies * (1 + self.lateral_fraction), 1.34
        f = self.non_chest_fraction
        p_nc = f * m_c / (f * m_c + (1 - f) * m_nc)
        u_region = rng.random(m)
        nc = u_region < p_nc
        other = np.array(list(_REGION_WEIGHTS))
        cum = np.cumsum(list(_REGION_WEIGHTS.values()))
        region = np.zeros(m, dtype=np.int8)  # 0 chest, 1.. REGIONS index
        pick = np.searchsorted(cum, rng.random(m) * cum[-1], side="right")
        region[nc] = 1 + np.array([REGIONS.index(r) - 1 for r in other])[pick[nc]]
        n_studies = np.minimum(rng.geometric(1.0 / self.mean_studies, m), 50)
        n_studies[nc] = 1
        sex = np.where(rng.random(m) < 0.56, "M", "F")
        age = np.clip(np.round(rng.normal(52, 18, m)), 1, 95).astype(np.int16)
        u_split = rng.random(m)
        split = np.full(m, "train", dtype=object)
        split[u_split < self.test_fraction] = "test"
        split[(u_split >= self.test_fraction) & (u_split < self.test_fraction + self.val_fraction)] = "val"
        # studies
        st_pat = np.repeat(np.arange(m), n_studies)
        ns = len(st_pat)
        st_region = region[st_pat]
        chest = st_region == 0
        u_view = rng.random(ns)
        two = np.where(chest, rng.random(ns) < self.lateral_fraction, rng.random(ns) < 0.4)
        two &= st_region != REGIONS.index("pelvis")
        n_img = 1 + two.astype(np.int64)
        # finding latents: patient part + study part, correlated across findings
        Lf = _copula_factor()
        zp = rng.standard_normal((m, len(FINDINGS))) @ Lf.T
        zs = rng.standard_normal((ns, len(FINDINGS))) @ Lf.T
        r = np.array([PERSISTENCE[f_] for f_ in FINDINGS])
        z = np.sqrt(r) * zp[st_pat] + np.sqrt(1 - r) * zs
        # images
        im_st = np.repeat(np.arange(ns), n_img)
        first = np.r_[0, np.cumsum(n_img)[:-1]]
        k_in_study = np.arange(len(im_st)) - first[im_st]
        return {"pat": st_pat[im_st], "study": im_st, "k": k_in_study, "u_view": u_view[im_st],
                "region": st_region[im_st], "z": z[im_st].astype(np.float32),
                "sex": sex, "age": age, "split": split}

    def _build_index(self) -> Index:
        blocks, total = [], 0
        while total < self.n:
            blocks.append(self._block(len(blocks)))
            total += len(blocks[-1]["pat"])
        n = self.n

        def cat(key: str) -> np.ndarray:
            return np.concatenate([x[key] for x in blocks])[:n]

        # block-local patient and study numbers -> global ones
        pat = cat("pat").astype(np.int64) + np.concatenate(
            [np.full(len(x["pat"]), b * _BLOCK) for b, x in enumerate(blocks)])[:n]
        st_base = np.cumsum([0] + [int(x["study"].max()) + 1 for x in blocks[:-1]])
        study = cat("study").astype(np.int64) + np.concatenate(
            [np.full(len(x["study"]), st_base[b]) for b, x in enumerate(blocks)])[:n]
        k = cat("k").astype(np.int64)
        region = cat("region").astype(np.int8)
        u_view = cat("u_view")
        z = cat("z")
        sex_p = np.concatenate([x["sex"] for x in blocks])  # per patient (global number)
        age_p = np.concatenate([x["age"] for x in blocks])
        split_p = np.concatenate([x["split"] for x in blocks])

        # views
        views = np.empty(n, dtype=object)
        chest = region == 0
        views[chest] = np.where(u_view[chest] < self.ap_fraction, "AP", "PA")
        views[chest & (k == 1)] = "LL"
        for ri, rname in enumerate(REGIONS[1:], start=1):
            sel = region == ri
            if not sel.any():
                continue
            opts = REGION_VIEWS[rname]
            names = np.array([o[0] for o in opts], dtype=object)
            cum = np.cumsum([o[1] for o in opts])
            pick = np.searchsorted(cum / cum[-1], u_view[sel], side="right")
            pick = np.minimum(np.where(k[sel] == 1, (pick + 1) % len(opts), pick), len(opts) - 1)
            views[sel] = names[pick]

        # labels from the latents (Gaussian copula: exact marginal prevalences)
        p = np.array([self.prevalence[f_] for f_ in FINDINGS])
        with np.errstate(divide="ignore"):
            thr = ndtri(1.0 - p)  # +inf where p == 0
        pos = z > thr[None, :].astype(np.float32)
        labels = np.zeros((n, len(LABELS)), dtype=np.int8)
        labels[:, : len(FINDINGS)] = pos
        labels[:, -1] = ~pos.any(axis=1)
        labels[~chest] = UNKNOWN

        # follow-up number: image ordinal within the patient
        order_start = np.r_[0, np.flatnonzero(np.diff(pat)) + 1]
        run_len = np.diff(np.r_[order_start, n])
        fu = np.arange(n) - np.repeat(order_start, run_len)
        ids = [f"{a + 1:08d}_{b_:03d}.png" for a, b_ in zip(pat.tolist(), np.minimum(fu, 999).tolist())]
        pids = (pat + 1).astype(str).astype(object)
        irma = np.empty(n, dtype=object)
        for (rname, v), code in IRMA_CODES.items():
            irma[(region == REGIONS.index(rname)) & (views == v)] = code
        self._cols = {"pat": pat, "study": study, "region": region, "z": z, "fu": fu,
                      "sex": sex_p[pat], "age": age_p[pat], "thr": thr}
        n_pat = int(len(np.unique(pat)))
        self.info = {
            "generator": GENERATOR_VERSION,
            "synthetic": "phantom images: not clinical data, no clinical claims",
            "n_patients": n_pat,
            "non_chest_images": int((~chest).sum()),
            "label_policy": "non-chest images have every chest label unknown (-1)",
            "prevalence": dict(self.prevalence),
        }
        return Index(ids=ids, patient_ids=pids, splits=split_p[pat],
                     labels=labels, views=views, irma_codes=irma)

    # -- per-image parameters ----------------------------------------------------
    @property
    def regions(self) -> np.ndarray:
        """Body region of every row: chest, hand, skull, knee, spine or pelvis."""
        self.index  # noqa: B018  (builds the columns)
        return np.asarray(REGIONS, dtype=object)[self._cols["region"]]

    def ctr_values(self) -> np.ndarray:
        """Cardiothoracic ratio drawn for every row (NaN for non-chest rows), vectorised."""
        self.index  # noqa: B018  (builds the columns)
        j = FINDINGS.index("Cardiomegaly")
        return _ctr_from_latent(self._cols["z"][:, j].astype(np.float64), float(self._cols["thr"][j]),
                                self.prevalence["Cardiomegaly"], self._cols["region"] == 0)

    def scene(self, i: int) -> dict[str, Any]:
        """Everything drawn for row ``i``: region, view, anatomy, findings (with severity), acquisition.

        Findings map a label name to its drawn geometry plus ``sev`` in (0, 1];
        chest scenes carry ``ctr`` (drawn cardiothoracic ratio).
        """
        ix = self.index
        i = int(i)
        if not 0 <= i < len(ix):
            raise IndexError(f"phantom: row {i} out of range 0..{len(ix) - 1}")
        col = self._cols
        pat, study = int(col["pat"][i]), int(col["study"][i])
        region = REGIONS[int(col["region"][i])]
        view = str(ix.views[i])
        prng = np.random.default_rng([self.seed, 1, pat])
        srng = np.random.default_rng([self.seed, 2, study])
        irng = np.random.default_rng([self.seed, 3, i])
        sc: dict[str, Any] = {"row": i, "region": region, "view": view, "patient": pat, "study": study,
                              "findings": {}, "ctr": None}
        if region == "chest":
            anat = sample_patient(prng, str(col["sex"][i]), int(col["age"][i]))
            anat = study_jitter(anat, srng, view)
            anat["ctr"] = float(_ctr_from_latent(np.array([col["z"][i, 1]], dtype=np.float64),
                                                 float(col["thr"][1]), self.prevalence["Cardiomegaly"],
                                                 np.array([True]))[0])
            sc["ctr"] = anat["ctr"]
            for j, name in enumerate(FINDINGS):
                if ix.labels[i, j] != 1:
                    continue
                p = self.prevalence[name]
                sev = float(np.clip((ndtr(float(col["z"][i, j])) - (1.0 - p)) / p, 1e-3, 1.0))
                geo = sample_finding_geometry(name, np.random.default_rng([self.seed, 4, pat, j]), anat)
                sc["findings"][name] = {**geo, "sev": sev}
            sc["anatomy"] = anat
        else:
            sc["anatomy"] = SAMPLERS[region](prng)
        # acquisition: the patient's usual department (positioning, exposure, collimation)
        # plus per-image jitter, so follow-ups resemble each other more than strangers do
        sc["canvas"], sc["acq"] = _acquisition(np.random.default_rng([self.seed, 5, pat]), irng,
                                               region, view)
        return sc

    def render(self, scene: dict[str, Any], size: int | None = None,
               layers: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Draw a scene (from :meth:`scene`, possibly edited) at ``size`` pixels."""
        return render_scene(scene, size or self.size, layers)

    def load_image(self, i: int) -> np.ndarray:
        return render_scene(self.scene(i), self.size)

    def irma_tree(self) -> Any | None:
        """The phantom's IRMA code tree (None until ``cxrbench.metrics.irma`` exists)."""
        try:
            from cxrbench.metrics.irma import IrmaCodeTree
        except ImportError:
            return None
        path = irma_tree_path()
        if not (path / "A.csv").is_file():
            raise FileNotFoundError(
                f"phantom IRMA tree missing: {path}/A.csv..D.csv should ship with cxrbench "
                "(package data 'data/*/*'); reinstall cxrbench")
        return IrmaCodeTree.load(path)


def _acquisition(arng: np.random.Generator, irng: np.random.Generator, region: str,
                 view: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(canvas, acquisition) parameters: patient-level habit ``arng`` + image jitter ``irng``."""
    chest = region == "chest"
    if chest:
        base_cy, sd_pos, scale, ang = 0.06, 0.025, (0.85, 0.97), 0.02
    else:
        base_cy, sd_pos, scale, ang = 0.0, 0.035, (0.8, 1.0), 0.07
    lo, hi = (arng.uniform(-0.05, 0.05), arng.uniform(1.1, 1.3)) if chest else \
        (arng.uniform(-0.05, 0.1), arng.uniform(1.4, 1.9))
    canvas = {"cx": arng.normal(0.0, sd_pos) + irng.normal(0.0, 0.012),
              "cy": arng.normal(base_cy, sd_pos) + irng.normal(0.0, 0.012),
              "scale": arng.uniform(*scale) * (1.0 + irng.normal(0.0, 0.015)),
              "angle": arng.normal(0.0, ang) + irng.normal(0.0, 0.015)}
    sides = arng.uniform(0.0, 0.07, 4) * (arng.random(4) < 0.2)
    coll = tuple(np.clip(sides + irng.normal(0.0, 0.008, 4) * (sides > 0), 0.0, 0.1))
    markers = ["L", "R", view if len(view) <= 3 else "L", ""]
    marker = str(arng.choice(markers)) if irng.random() < 0.8 else str(irng.choice(markers))
    acq = {
        "lo": lo + irng.normal(0.0, 0.015), "hi": hi + irng.normal(0.0, 0.04),
        "gamma": float(np.clip(arng.uniform(0.8, 1.3) + irng.normal(0.0, 0.05), 0.7, 1.4)),
        "blur": max(0.0, arng.uniform(0.0, 2.0) + irng.normal(0.0, 0.25)),
        "noise": arng.uniform(0.004, 0.025) * irng.uniform(0.8, 1.25),
        "heel": arng.uniform(-0.05, 0.05), "collimation": coll,
        "coll_value": arng.uniform(0.75, 1.0) if arng.random() < 0.8 else 0.0,
        "marker": marker, "marker_pos": int(arng.integers(4)), "marker_value": arng.uniform(0.85, 1.0),
        "noise_seed": int(irng.integers(2**63 - 1)),
    }
    return canvas, acq


def _ctr_from_latent(z: np.ndarray, thr: float, p: float, chest: np.ndarray) -> np.ndarray:
    """Monotone map latent -> CTR with CTR > 0.5 exactly when the latent is above threshold.

    Positives: 0.51 + 0.19 u, u = severity in (0, 1]. Negatives: around 0.445
    (sd ~0.032), capped at 0.495, so borderline normals exist.
    """
    out = np.full(z.shape, np.nan)
    pos = z > np.float32(thr) if np.isfinite(thr) else np.zeros(z.shape, bool)
    u = ndtr(z)
    sev = np.clip((u - (1.0 - p)) / max(p, 1e-12), 1e-3, 1.0)
    v = np.clip(u / max(1.0 - p, 1e-12), 1e-6, 1 - 1e-6)
    neg = np.minimum(0.445 + 0.032 * ndtri(v), CTR_THRESHOLD - 0.005)
    out[chest] = np.where(pos, CTR_THRESHOLD + 0.01 + 0.19 * sev, np.maximum(neg, 0.34))[chest]
    return out


def render_scene(sc: dict[str, Any], size: int, layers: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Scene -> float32 image in [0, 1] of ``size`` x ``size``."""
    cv = sc["canvas"]
    c = Canvas(size, cv["cx"], cv["cy"], cv["scale"], cv["angle"])
    if sc["region"] == "chest":
        draw = lateral if sc["view"] == "LL" else frontal
        P = draw(c, sc["anatomy"], sc["findings"], layers)
    else:
        P = DRAWERS[sc["region"]](c, sc["anatomy"], sc["view"])
    acq = dict(sc["acq"])
    acq["blur"] = int(round(acq["blur"] * size / 256.0))  # blur is fixed in patient units
    return finish(P, acq, np.random.default_rng(acq["noise_seed"]))


# -- NIH ChestX-ray14 layout export ---------------------------------------------
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def export_nih(ds: PhantomDataset, out: str | Path, *, frontal_only: bool = False,
               overwrite: bool = False, progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write the chest images of ``ds`` as an NIH ChestX-ray14-style folder.

    Layout: ``images/<Image Index>`` (8-bit PNG), ``Data_Entry_2017_v2020.csv``
    (official header; labels joined by ``|``, ``No Finding`` when none),
    ``train_val_list.txt`` and ``test_list.txt`` (the phantom's patient-level
    split). Non-chest images are not exported (NIH has none).

    Returns the output folder.
    """
    from PIL import Image

    out = Path(out)
    csv_path = out / "Data_Entry_2017_v2020.csv"
    if csv_path.exists() and not overwrite:
        raise FileExistsError(f"{csv_path} exists; pass overwrite=True (--overwrite) or another folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    ix = ds.index
    rows = np.flatnonzero(ds.regions == "chest")
    if frontal_only:
        rows = rows[np.isin(ix.views[rows], ["PA", "AP"])]
    spacing = round(350.0 / ds.size, 4)  # a 35 cm field of view
    lines = [NIH_HEADER]
    train, test = [], []
    for done, i in enumerate(rows, 1):
        img = ds.load_image(int(i))
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(out / "images" / ix.ids[i])
        pos = [name for name, v in zip(FINDINGS, ix.labels[i]) if v == 1]
        lines.append(",".join([
            ix.ids[i], "|".join(pos) or "No Finding", str(int(ds._cols["fu"][i])), ix.patient_ids[i],
            str(int(ds._cols["age"][i])), str(ds._cols["sex"][i]), ix.views[i], str(ds.size),
            str(ds.size), str(spacing), str(spacing)]))
        (test if ix.splits[i] == "test" else train).append(ix.ids[i])
        if progress:
            progress("export", 1, len(rows))
    tmp = csv_path.with_suffix(".csv.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(csv_path)
    (out / "train_val_list.txt").write_text("".join(f"{x}\n" for x in train), encoding="utf-8")
    (out / "test_list.txt").write_text("".join(f"{x}\n" for x in test), encoding="utf-8")
    return out
