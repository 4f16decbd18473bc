"""Builders of small dataset trees in the publishers' layouts (real headers, real path
shapes, generated pixels), used by the dataset tests. Nothing binary is committed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")

CHEXPERT_HEADER = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,"
                   "Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,"
                   "Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices")


def grey(seed: int, size: int = 24, dtype=np.uint8) -> np.ndarray:
    """A distinct deterministic greyscale image."""
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    return rng.integers(0, hi + 1, (size, size)).astype(dtype)


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def corrupt(path: Path) -> Path:
    """Keep a valid PNG signature and header but cut the data: decodes to an error."""
    data = path.read_bytes()
    path.write_bytes(data[: max(60, len(data) // 3)])
    return path


# -- NIH ChestX-ray14 ---------------------------------------------------------------------------
#: (image, findings, follow-up, patient, view)
NIH_ROWS = [
    ("00000001_000.png", "Cardiomegaly", 0, 1, "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "PA"),
    ("00000001_002.png", "Cardiomegaly|Effusion", 2, 1, "PA"),
    ("00000002_000.png", "No Finding", 0, 2, "PA"),
    ("00000003_000.png", "Hernia", 0, 3, "PA"),
    ("00000003_001.png", "Hernia|Infiltration", 1, 3, "AP"),
    ("00000004_000.png", "Mass|Nodule", 0, 4, "AP"),
    ("00000005_000.png", "No Finding", 0, 5, "PA"),
    ("00000006_000.png", "Pleural_Thickening|Pneumothorax|Atelectasis", 0, 6, "PA"),
    ("00000007_000.png", "Consolidation|Edema|Fibrosis|Pneumonia", 0, 7, "AP"),
    ("00030805_000.png", "No Finding", 0, 30805, "PA"),
]


def nih_tree(root: Path, *, present: set[str] | None = None, archives: bool = False,
             split_lists: bool = False, old_csv: bool = False, size: int = 24) -> Path:
    """An NIH ChestX-ray14 root. ``present``: images written (default all);
    ``archives``: images_001/images/... layout; ``old_csv``: Data_Entry_2017.csv."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [NIH_HEADER + ("," if old_csv else "")]
    for k, (name, f, fu, pid, view) in enumerate(NIH_ROWS):
        lines.append(f"{name},{f},{fu},{pid},{40 + k},M,{view},2500,2048,0.143,0.143"
                     + ("," if old_csv else ""))
    csv_name = "Data_Entry_2017.csv" if old_csv else "Data_Entry_2017_v2020.csv"
    (root / csv_name).write_text("\n".join(lines) + "\n")
    for k, (name, *_rest) in enumerate(NIH_ROWS):
        if present is not None and name not in present:
            continue
        folder = root / (f"images_{1 + k % 2:03d}/images" if archives else "images")
        save_png(folder / name, grey(k, size))
    if split_lists:
        test = {"00000004_000.png", "00000005_000.png"}
        names = [r[0] for r in NIH_ROWS]
        (root / "train_val_list.txt").write_text("\n".join(n for n in names if n not in test) + "\n")
        (root / "test_list.txt").write_text("\n".join(sorted(test)) + "\n")
    return root


# -- CheXpert ------------------------------------------------------------------------------------
#: (relative path below the root, Frontal/Lateral, AP/PA, 14 label cells)
CHEXPERT_TRAIN = [
    ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP",
     ["1.0", "", "", "", "", "", "", "", "", "0.0", "", "", "", "1.0"]),
    ("train/patient00002/study2/view1_frontal.jpg", "Frontal", "AP",
     ["", "", "-1.0", "1.0", "", "-1.0", "-1.0", "", "-1.0", "", "-1.0", "", "1.0", ""]),
    ("train/patient00002/study1/view1_frontal.jpg", "Frontal", "AP",
     ["", "", "", "1.0", "", "", "-1.0", "", "", "", "", "", "1.0", ""]),
    ("train/patient00002/study1/view2_lateral.jpg", "Lateral", "",
     ["", "", "", "1.0", "", "", "-1.0", "", "", "", "", "", "1.0", ""]),
    ("train/patient00003/study1/view1_frontal.jpg", "Frontal", "PA",
     ["", "", "", "1.0", "", "1.0", "", "", "", "0.0", "", "", "", ""]),
    ("train/patient00004/study1/view1_frontal.jpg", "Frontal", "LL",
     ["1.0", "0.0", "", "", "", "", "", "", "", "0.0", "", "", "", ""]),
]
CHEXPERT_VALID = [
    ("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP",
     ["0.0", "1.0", "1.0", "1.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "1.0"]),
    ("valid/patient64542/study1/view2_lateral.jpg", "Lateral", "",
     ["0.0", "0.0", "0.0", "1.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0"]),
]


def chexpert_tree(parent: Path, *, name: str = "CheXpert-v1.0-small", images: bool = True,
                  gz: bool = False, skip: set[str] = frozenset()) -> Path:
    """A CheXpert root (returned) inside ``parent``; CSV paths are relative to ``parent``."""
    root = parent / name
    root.mkdir(parents=True, exist_ok=True)
    for csv_name, rows in (("train.csv", CHEXPERT_TRAIN), ("valid.csv", CHEXPERT_VALID)):
        lines = [CHEXPERT_HEADER]
        for k, (rel, fl, appa, labels) in enumerate(rows):
            lines.append(",".join([f"CheXpert-v1.0-small/{rel}", "Female", str(50 + k), fl, appa, *labels]))
        text = "\n".join(lines) + "\n"
        if gz and csv_name == "train.csv":
            (root / "train.csv.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (root / csv_name).write_text(text)
    if images:
        for k, (rel, *_r) in enumerate(CHEXPERT_TRAIN + CHEXPERT_VALID):
            if rel in skip:
                continue
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(grey(100 + k, 32)).save(p, quality=95)
    return root


# -- DICOM ------------------------------------------------------------------------------------------
def save_dicom(path: Path, arr: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
               signed: bool = False, slope: float | None = None, intercept: float | None = None,
               center: float | None = None, width: float | None = None,
               voi_lut: list[int] | None = None, lut_bits: int = 16, frames: int = 1) -> Path:
    """Write a minimal valid DICOM file (explicit VR little endian) with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = "P1"
    rows, cols = arr.shape[-2:]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    if center is not None:
        ds.WindowCenter = center
        ds.WindowWidth = width
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, lut_bits]
        item.add_new(0x00283006, "OW", np.asarray(voi_lut, dtype="<u2").tobytes())  # LUT Data
        ds.VOILUTSequence = [item]
    ds.PixelData = np.ascontiguousarray(arr.astype(np.int16 if signed else np.uint16)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
