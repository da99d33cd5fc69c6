"""The bundled demo case: a procedural chest-CT phantom with real LIDC nodule shapes.

LungFuse cannot ship LIDC-IDRI images, so the default input of the app and the test case
that needs no ``../shared`` data is generated here: a synthetic chest CT (in HU), written
as a CT DICOM series, with a free-text radiology report that describes its nodules, and a
``truth.json`` with the exact geometry. SYNTHETIC DATA, NOT FOR DIAGNOSTIC USE.

Outputs of :func:`make_demo_case` in ``out_dir``::

    ct/IM0000.dcm .. IM{n-1:04d}.dcm   one CT slice per file, IM0000 = most superior slice
    report.txt                         free-text report (first line: SYNTHETIC DEMO REPORT ...)
    truth.json                         geometry + per-nodule ground truth

Geometry convention (the project's): arrays are z-y-x; voxel (k, j, i) maps to
``LPS = origin + direction @ (spacing * [k, j, i])`` where ``origin`` is the LPS position
(x, y, z mm) of voxel (0, 0, 0) and the COLUMNS of ``direction`` are the LPS unit vectors
of the z, y, x array axes. The phantom array has k increasing toward the head (superior),
j toward posterior and i toward the patient's left, so ``direction`` has columns
[0, 0, 1], [0, 1, 0], [1, 0, 0]. The DICOM files are numbered from the top:
``InstanceNumber = nz - k`` (file ``IM{nz-1-k:04d}.dcm``).

Anatomy is laid out in "reference millimetres" for a 320 mm x 320 mm x 280 mm field of view
(the default grid) and scaled to the requested grid, so a smaller grid still holds a whole
chest; the LIDC nodule shapes always keep their true physical size.

Nodule shapes: the readers' consensus masks of the single nodules of LIDC-IDRI-0001
(solid, spiculated) and LIDC-IDRI-0002 (readers rated it ground-glass; the phantom renders
every nodule solid), both TRAIN patients per :func:`lungfuse.pipelines.lab.lidc.patient_split`
(a test patient is refused), shipped as ``resources/demo/nodule_shapes.npz``
(:mod:`.shapes`). They are resampled to the demo spacing, placed at random
(seeded) positions fully inside a lung with a margin from the pleura and the mediastinum,
and rendered as solid tissue (+30 HU, soft edge). ``truth.json`` and the report say where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lungfuse.pipelines.demo.dicom_writer import SERIES_NUMBER, write_series
from lungfuse.pipelines.demo.nodules import (
    axial_diameters,
    lobe_of,
    margin_phrase,
    place_nodules,
    render_nodules,
)
from lungfuse.pipelines.demo.phantom import HU_NODULE, NOISE_SIGMA_HU, Grid, build_phantom
from lungfuse.pipelines.demo.report import LOBE_NAMES, lung_rads_statement, write_report
from lungfuse.pipelines.demo.shapes import DEMO_NODULE_SOURCES, load_demo_shapes

__all__ = ["DemoCase", "make_demo_case"]

_ORIGIN_Z = -300.0  # mm, LPS z of the most inferior slice (arbitrary, LIDC-like)


@dataclass(frozen=True)
class DemoCase:
    """Paths and ground truth of a generated demo case.

    Attributes
    ----------
    out_dir: the case folder.
    ct_dir: ``out_dir / "ct"``, the DICOM series (one file per slice).
    report_path: ``out_dir / "report.txt"``.
    truth: the content of ``out_dir / "truth.json"`` (geometry + nodules).
    series_instance_uid: SeriesInstanceUID of the CT series.
    """

    out_dir: Path
    ct_dir: Path
    report_path: Path
    truth: dict[str, Any]
    series_instance_uid: str

    @property
    def truth_path(self) -> Path:
        """``out_dir / "truth.json"``."""
        return self.out_dir / "truth.json"


def make_demo_case(
    out_dir: str | Path,
    *,
    seed: int = 0,
    shape: tuple[int, int, int] = (112, 256, 256),
    spacing: tuple[float, float, float] = (2.5, 1.25, 1.25),
    n_nodules: int = 2,
) -> DemoCase:
    """Generate the synthetic demo chest CT with its report and ground truth.

    Parameters
    ----------
    out_dir: folder to write (created); existing ``ct/IM*.dcm`` files are replaced.
    seed: seeds everything (anatomy noise, vessel trees, nodule positions, UIDs); the same
        seed and grid give byte-identical outputs.
    shape: grid size (nz, ny, nx), z-y-x.
    spacing: voxel size (z, y, x) in mm; z is the slice spacing = slice thickness.
    n_nodules: 0, 1 or 2 nodules (shapes from LIDC-IDRI-0001 then LIDC-IDRI-0002).

    Returns
    -------
    DemoCase

    Raises
    ------
    ValueError: bad arguments.
    RuntimeError: a nodule does not fit.
    """
    if not 0 <= n_nodules <= len(DEMO_NODULE_SOURCES):
        raise ValueError(f"n_nodules must be 0..{len(DEMO_NODULE_SOURCES)}, got {n_nodules}")
    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
    spacing = tuple(float(v) for v in spacing)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 sizes >= 16 (z, y, x), got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive mm values (z, y, x), got {spacing}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # Load the nodule shapes first: a missing shapes file must fail before any heavy work.
    shapes = load_demo_shapes(n_nodules) if n_nodules else []

    rng = np.random.default_rng(seed)
    g = Grid.make(shape, spacing)
    ph = build_phantom(rng, g)
    placed = place_nodules(rng, ph, g, spacing, shapes)
    render_nodules(ph.hu, placed)

    # Scanner blur (in-plane PSF) then quantum noise.
    hu = ndimage.gaussian_filter(ph.hu, (0.35, 0.7, 0.7))
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * NOISE_SIGMA_HU

    nz, ny, nx = shape
    sz, sy, sx = spacing
    origin = (-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, _ORIGIN_Z)  # LPS x, y, z of voxel (0,0,0)
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # columns: z, y, x axes

    params = f"{shape}|{spacing}|{n_nodules}"
    series_uid, sop_uids = write_series(out / "ct", hu, spacing, origin, seed, params)

    nod_truth: list[dict[str, Any]] = []
    for nod in placed:
        idx = np.argwhere(nod.mask)
        cen = idx.mean(axis=0)
        # The centroid of a non-convex shape can fall outside it: use the nearest mask voxel.
        near = idx[int(np.argmin(((idx - cen) ** 2).sum(-1)))]
        center = np.array(nod.corner) + near
        k = int(center[0])
        lo = np.array(nod.corner) + idx.min(axis=0)
        hi = np.array(nod.corner) + idx.max(axis=0) + 1
        long_mm, short_mm = 0.0, 0.0
        for kk in range(nod.mask.shape[0]):
            lm, sm = axial_diameters(nod.mask[kk], sy, sx)
            if lm > long_mm:
                long_mm, short_mm = lm, sm
        lung = ph.lung_right if nod.side == "right" else ph.lung_left
        lobe = lobe_of(nod.side, g.to_ref(center), lung, g)
        lps = np.array(origin) + direction @ (np.array(spacing) * center)
        margin = margin_phrase(nod.ratings)
        cat, sentence = lung_rads_statement(long_mm, short_mm, spiculated=margin == "spiculated margins")
        nod_truth.append(
            {
                "source_patient_id": nod.source_patient_id,
                "source_nodule_index": nod.source_nodule_index,
                "center_voxel_zyx": [int(v) for v in center],
                "center_lps_mm": [round(float(v), 3) for v in lps],
                "instance_number": nz - k,
                "sop_instance_uid": sop_uids[k],
                "diameter_mm": round(long_mm, 2),
                "diameter_mm_rounded": int(round(long_mm)),
                "short_axis_mm": round(short_mm, 2),
                "short_axis_mm_rounded": int(round(short_mm)),
                "volume_mm3": round(float(nod.mask.sum()) * sz * sy * sx, 1),
                "side": nod.side,
                "lobe": lobe,
                "lobe_name": LOBE_NAMES[lobe],
                "texture": "solid",
                "margin": margin,
                "hu": HU_NODULE,
                "bbox_voxels_zyx": {"min": [int(v) for v in lo], "max_exclusive": [int(v) for v in hi]},
                "reader_ratings_median": nod.ratings,
                "lung_rads": cat,
                "lung_rads_sentence": sentence,
            }
        )

    report_text = write_report(out / "report.txt", nod_truth, spacing)
    truth: dict[str, Any] = {
        "note": "SYNTHETIC PHANTOM - NOT FOR DIAGNOSTIC USE",
        "generator": "lungfuse.pipelines.demo.case.make_demo_case",
        "seed": seed,
        "geometry": {
            "axis_order": "zyx",
            "shape_zyx": list(shape),
            "spacing_zyx_mm": list(spacing),
            "origin_lps_mm": [float(v) for v in origin],
            "direction": direction.tolist(),
            "direction_note": "row-major 3x3; COLUMNS are the LPS unit vectors of the z, y, x array axes",
            "instance_number_rule": "InstanceNumber = nz - k (InstanceNumber 1 = most superior slice)",
        },
        "series_number": SERIES_NUMBER,
        "series_instance_uid": series_uid,
        "n_slices": nz,
        "nodules": nod_truth,
        "report_first_line": report_text.splitlines()[0],
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return DemoCase(
        out_dir=out,
        ct_dir=out / "ct",
        report_path=out / "report.txt",
        truth=truth,
        series_instance_uid=series_uid,
    )
