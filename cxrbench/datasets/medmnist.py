"""MedMNIST chest sets (ChestMNIST, PneumoniaMNIST) from their ``.npz`` files.

MedMNIST v2/v3 ships one ``.npz`` per dataset and size, with the official
splits as arrays ``train_images`` / ``train_labels``, ``val_*``, ``test_*``::

    pneumoniamnist.npz        28 x 28   (MedMNIST v2 name)
    pneumoniamnist_64.npz     64 x 64   (v3 sizes 64, 128, 224)

``root`` is the ``.npz`` file itself or a folder holding it; without a root the
``medmnist`` package's default folder ``~/.medmnist`` is searched, and if the
file is not there and the optional ``medmnist`` package is installed (and
online) it downloads it. Otherwise the error says where to put the file.

MedMNIST has no patient ids: each image is its own patient (so same-patient
exclusion does nothing). ChestMNIST is derived from NIH ChestX-ray14 with a
patient-level split, but the image-to-patient mapping is not shipped.

Labels: ChestMNIST -> the 14 NIH findings, multi-label. PneumoniaMNIST ->
two one-hot classes ``Normal`` / ``Pneumonia`` with ``single_label = True``
(P@K counts a neighbour relevant when its class is the same, normal or not;
two columns rather than one so a "Normal" query has a class to match).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cxrbench.benchmark.store import default_cache_dir
from cxrbench.datasets import DATASETS
from cxrbench.datasets.base import SPLITS, Dataset, Index

SIZES = (28, 64, 128, 224)
#: arrays bigger than this are memory-mapped from an uncompressed copy in the cache
_IN_MEMORY_BYTES = 512 * 2**20
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class MedMNIST(Dataset):
    """Base of the MedMNIST datasets: subclasses set ``flag`` and the label mapping."""

    flag: ClassVar[str] = ""
    #: images are arrays already: the decoded-image cache would only copy them
    cache_images: ClassVar[bool] = False

    def __init__(self, root: str | None = None, size: int | None = None) -> None:
        if size is not None and int(size) not in SIZES:
            raise ValueError(f"{self.name}: size must be one of {SIZES}, got {size}")
        super().__init__(None if root is None else str(root),
                         size=None if size is None else int(size))
        self.size = None if size is None else int(size)
        self._npz: _Npz | None = None

    # -- locating the file -------------------------------------------------------------
    def file_names(self, size: int) -> list[str]:
        return [f"{self.flag}.npz", f"{self.flag}_28.npz"] if size == 28 else [f"{self.flag}_{size}.npz"]

    def npz_path(self) -> Path:
        size = self.size or 28
        if self.root is not None:
            root = Path(self.root).expanduser()
            if root.is_file():
                return root
            if not root.is_dir():
                raise FileNotFoundError(f"{self.name}: {root} does not exist")
            for n in self.file_names(size):
                if (root / n).is_file():
                    return root / n
            raise FileNotFoundError(
                f"{self.name}: no {' or '.join(self.file_names(size))} in {root}; download it from "
                f"MedMNIST (zenodo record of MedMNIST v2/v3) into that folder, or pass the .npz as --root"
            )
        home = Path(os.environ.get("MEDMNIST_ROOT", Path.home() / ".medmnist"))
        for n in self.file_names(size):
            if (home / n).is_file():
                return home / n
        return self._download(home, size)

    def _download(self, home: Path, size: int) -> Path:
        try:
            import medmnist  # type: ignore[import-not-found]
        except ImportError:
            raise FileNotFoundError(
                f"{self.name}: no local file. Put {self.file_names(size)[0]} in {home} or pass "
                "--root PATH (the .npz or its folder); or `pip install medmnist` to let it download"
            ) from None
        home.mkdir(parents=True, exist_ok=True)
        cls = getattr(medmnist, medmnist.INFO[self.flag]["python_class"])
        kwargs: dict[str, Any] = {"split": "test", "download": True, "root": str(home)}
        if size != 28:
            kwargs["size"] = size
        cls(**kwargs)
        for n in self.file_names(size):
            if (home / n).is_file():
                return home / n
        raise FileNotFoundError(f"{self.name}: medmnist downloaded nothing into {home}")

    @property
    def npz(self) -> "_Npz":
        if self._npz is None:
            self._npz = _Npz(self.npz_path())
        return self._npz

    # -- index -------------------------------------------------------------------------------
    def _build_index(self) -> Index:
        npz = self.npz
        self.info["file"] = str(npz.path)
        ids, splits, labels = [], [], []
        self._offsets: dict[str, int] = {}
        for split in SPLITS:
            key = f"{split}_images"
            if key not in npz.keys:
                raise ValueError(f"{self.name}: {npz.path} has no {key!r} array (keys: {sorted(npz.keys)})")
            lab = np.asarray(npz.array(f"{split}_labels"))
            n = lab.shape[0]
            shape = npz.shape(key)
            if shape[0] != n:
                raise ValueError(f"{self.name}: {npz.path}: {key} has {shape[0]} rows, labels {n}")
            if self.size is not None and tuple(shape[1:3]) != (self.size, self.size):
                raise ValueError(f"{self.name}: {npz.path} holds {shape[1]}x{shape[2]} images, "
                                 f"but size={self.size} was asked for")
            self._offsets[split] = len(ids)
            ids.extend(f"{split}-{j:06d}" for j in range(n))
            splits.extend([split] * n)
            labels.append(lab.reshape(n, -1))
        self.info["image_size"] = list(npz.shape("train_images")[1:3])
        self.info["patients"] = "none shipped: each image is its own patient"
        lab = self.map_labels(np.concatenate(labels))
        return Index(ids=ids, patient_ids=ids, splits=splits, labels=lab)

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        return raw.astype(np.int8)

    def content_key(self) -> str:
        p = self.npz_path()
        st = p.stat()
        return f"{p.name}:{st.st_size}"

    def load_image(self, i: int) -> np.ndarray:
        i = int(i)
        split = self.index.splits[i]
        j = i - self._offsets[split]
        img = np.asarray(self.npz.array(f"{split}_images")[j])
        if img.ndim == 3:  # RGB MedMNIST sets
            img = img[..., :3].astype(np.float32) @ _LUMA
        return (img.astype(np.float32) / 255.0).astype(np.float32)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-open the file instead of receiving pickled arrays
        state = dict(self.__dict__)
        state["_npz"] = None
        return state


@DATASETS.register("chestmnist")
class ChestMNIST(MedMNIST):
    """ChestMNIST (MedMNIST): NIH ChestX-ray14 at 28-224 px, 14 findings, official splits."""

    name = "chestmnist"
    flag = "chestmnist"
    label_names = (
        "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
        "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
        "Hernia",
    )

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        if raw.shape[1] != len(self.label_names):
            raise ValueError(f"chestmnist: labels have {raw.shape[1]} columns, expected 14")
        return raw.astype(np.int8)


@DATASETS.register("pneumoniamnist")
class PneumoniaMNIST(MedMNIST):
    """PneumoniaMNIST (MedMNIST): paediatric chest films, normal vs pneumonia, official splits."""

    name = "pneumoniamnist"
    flag = "pneumoniamnist"
    label_names = ("Normal", "Pneumonia")
    single_label = True

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        cls = raw.reshape(-1).astype(np.int64)
        if cls.size and (cls.min() < 0 or cls.max() > 1):
            raise ValueError(f"pneumoniamnist: class ids {np.unique(cls)}; expected 0 and 1")
        return np.eye(2, dtype=np.int8)[cls]


class _Npz:
    """Lazy access to the arrays of an ``.npz`` without reading it all.

    Stored (uncompressed) members are memory-mapped in place; small compressed
    ones are read into memory; big compressed ones (ChestMNIST 224 is 5.6 GB)
    are unpacked once into the cache folder and memory-mapped, so DataLoader
    workers share the page cache instead of each holding a copy.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                self._infos = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"cannot read {self.path} as an .npz file: {exc}") from exc
        self.keys = set(self._infos)
        self._arrays: dict[str, np.ndarray] = {}
        self._headers: dict[str, tuple[tuple[int, ...], np.dtype, bool, int]] = {}

    def _header(self, key: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
        if key not in self._headers:
            if key not in self._infos:
                raise KeyError(f"{self.path} has no array {key!r} (keys: {sorted(self.keys)})")
            with zipfile.ZipFile(self.path) as zf, zf.open(self._infos[key]) as fh:
                version = np.lib.format.read_magic(fh)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = reader(fh)
                header_len = fh.tell() if hasattr(fh, "tell") else 0
            self._headers[key] = (shape, dtype, fortran, header_len)
        return self._headers[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._header(key)[0]

    def array(self, key: str) -> np.ndarray:
        if key in self._arrays:
            return self._arrays[key]
        shape, dtype, fortran, header_len = self._header(key)
        info = self._infos[key]
        order = "F" if fortran else "C"
        if info.compress_type == zipfile.ZIP_STORED and header_len and not dtype.hasobject:
            arr = np.memmap(self.path, dtype=dtype, mode="r", shape=shape, order=order,
                            offset=_data_offset(self.path, info) + header_len)
        elif info.file_size <= _IN_MEMORY_BYTES:
            with zipfile.ZipFile(self.path) as zf, zf.open(info) as fh:
                arr = np.lib.format.read_array(fh)
        else:
            arr = self._unpacked(key)
        self._arrays[key] = arr
        return arr

    def _unpacked(self, key: str) -> np.ndarray:
        st = self.path.stat()
        tag = hashlib.sha256(f"{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        folder = default_cache_dir() / "npz" / tag
        target = folder / f"{key}.npy"
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npy")
            try:  # the member is a complete .npy file: stream it out, never all in memory
                with os.fdopen(fd, "wb") as out, zipfile.ZipFile(self.path) as zf, \
                        zf.open(self._infos[key]) as fh:
                    shutil.copyfileobj(fh, out, 16 * 2**20)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return np.load(target, mmap_mode="r")


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data (after its local file header)."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len
