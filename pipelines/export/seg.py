"""DICOM Segmentation export (``seg.dcm``): one BINARY segment per nodule mask, on the source CT's slices.

Research software, NOT for diagnostic use.

Each finding's mask is stored in the result on the 1.5 mm analysis grid (``Finding.mask``: the
NPZ array, z-y-x, and its ``affine_lps`` mask voxel -> LPS).  A DICOM SEG that a viewer overlays
on the CT must use the CT's own frames, so the masks are resampled onto the source slices:
every source voxel (z-y-x) near the mask goes to LPS through the slice's ImagePositionPatient and
the in-plane steps (exact for unevenly spaced slices), then to a mask voxel through the inverse
mask affine, nearest neighbour.  The SEG is derived from the source slices the masks reach:
each frame references its source SOP instance (highdicom builds the derivation references from
the source headers); the SR's evidence lists every slice of the series.  From an enhanced
multi-frame CT each SEG frame references its source frame (the frames may be in any z order).

Segments: category SCT 49755003 "Morphologically abnormal structure", type SCT 27925004
"Nodule", algorithm LungFuse (family DCM 123110 "Artificial Intelligence", the package version);
segment label = the finding id; tracking id = the finding id and tracking UID =
``Finding.tracking_uid``, the same as in the SR (:mod:`.sr`), which references these segments
by number.  No probability (FRACTIONAL) segment is written: the result's heatmaps are
attributions (gradient x input, Grad-CAM), not probabilities.

A result without findings (or whose masks are all missing) has nothing to segment: highdicom
refuses an empty Segmentation and a PACS has no use for one, so ``seg`` then writes no file and
logs why (the SR still reports every finding, or states that there is no nodule).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from lungfuse.pipelines.analysis.result import Finding
from lungfuse.pipelines.core.geometry import lps_to_voxel
from lungfuse.pipelines.core.volume import CTVolume
from lungfuse.pipelines.export.api import WRITERS, ExportContext
from lungfuse.pipelines.export.dicom_common import (
    DEVICE_NAME,
    MANUFACTURER,
    NOT_FOR_DIAGNOSTIC_USE,
    SERIES_NUMBERS,
    dataset_bytes,
    mark_deidentified,
    new_uid,
    software_version,
    source_headers,
    source_instances,
)
from lungfuse.pipelines.export.source import ExportError

__all__ = ["SegBuild", "build_seg", "mask_on_source", "resample_mask", "write_seg", "algorithm_identification"]

log = logging.getLogger(__name__)


@dataclass
class SegBuild:
    """The SEG of an export, shared with the SR through ``ctx.shared["seg"]``.

    Attributes:
        dataset: the Segmentation, None when no finding has a mask (nothing to segment).
        segment_numbers: finding id -> segment number (1-based) of the findings segmented.
        skipped: finding id -> why it has no segment (no mask, mask outside the CT).
    """

    dataset: hd.seg.Segmentation | None
    segment_numbers: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def algorithm_identification() -> hd.AlgorithmIdentificationSequence:
    """LungFuse as the segmenting algorithm (SEG segments; the SR's TID 4019 uses the same values)."""
    return hd.AlgorithmIdentificationSequence(name=DEVICE_NAME, family=codes.DCM.ArtificialIntelligence,
                                              version=software_version(), source=MANUFACTURER)


def mask_on_source(ctx: ExportContext, finding: Finding) -> np.ndarray | None:
    """``finding``'s mask resampled (nearest neighbour) onto the source CT's voxel grid.

    Returns a bool array of the CT's shape (z-y-x), or None when the finding has no mask in the
    result (a result saved without its NPZ, a reader-free realignment finding).

    Raises:
        ExportError: the mask array named by the finding is not 3-D or its affine is not 4x4.
    """
    if finding.mask is None or finding.mask.get("array") not in ctx.result.arrays:
        return None
    cache: dict[str, np.ndarray] = ctx.shared.setdefault("masks_on_source", {})  # the SEG and the SR's key slices
    if finding.id not in cache:
        cache[finding.id] = _resample(ctx, finding)
    return cache[finding.id]


def _resample(ctx: ExportContext, finding: Finding) -> np.ndarray:
    assert finding.mask is not None  # checked by mask_on_source
    mask = np.asarray(ctx.result.arrays[finding.mask["array"]]).astype(bool)
    aff = np.asarray(finding.mask["affine_lps"], dtype=np.float64)
    if mask.ndim != 3 or aff.shape != (4, 4):
        raise ExportError(f"finding {finding.id}: mask {finding.mask['array']!r} is {mask.shape}, affine "
                          f"{aff.shape}: expected a 3-D z-y-x mask and a 4x4 voxel->LPS affine")
    return resample_mask(mask, aff, ctx.source.volume)


def resample_mask(mask: np.ndarray, mask_affine: np.ndarray, volume: CTVolume) -> np.ndarray:
    """A mask (bool, z-y-x, ``mask_affine`` mask voxel (z, y, x) -> LPS (x, y, z) mm) resampled by
    nearest neighbour onto ``volume``'s voxels: a bool array of ``volume.shape`` (z-y-x).

    Each source voxel's LPS position comes from its slice's own position (``slice_positions``)
    and the in-plane steps, so unevenly spaced or gapped series are exact.
    """
    out = np.zeros(volume.shape, dtype=bool)
    if not mask.any():
        return out
    aff = np.asarray(mask_affine, dtype=np.float64)
    d = np.asarray(volume.direction, dtype=np.float64)
    positions = np.asarray(volume.slice_positions, dtype=np.float64)
    # Only the block around the mask is resampled (a nodule covers a few thousand voxels): its
    # 8 corners in LPS give the in-plane range (through the volume affine) and the slices (by
    # their own positions along the stacking direction), a voxel of margin each way.
    nz = np.argwhere(mask)
    lo, hi = nz.min(0) - 0.5, nz.max(0) + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    lps = corners @ aff[:3, :3].T + aff[:3, 3]
    src = lps_to_voxel(volume.affine, lps)
    y_lo, x_lo = np.maximum(np.floor(src.min(0)[1:]).astype(int) - 1, 0)
    y_hi, x_hi = np.minimum(np.ceil(src.max(0)[1:]).astype(int) + 2, np.array(volume.shape[1:]))
    along = (positions - positions[0]) @ d[:, 0]  # each slice's offset along the stacking direction, mm
    c_along = (lps - positions[0]) @ d[:, 0]
    margin = float(volume.spacing[0])
    ks = np.nonzero((along >= c_along.min() - margin) & (along <= c_along.max() + margin))[0]
    if y_hi <= y_lo or x_hi <= x_lo or len(ks) == 0:
        return out  # entirely outside the CT
    jj, ii = np.mgrid[y_lo:y_hi, x_lo:x_hi]
    inplane = jj[..., None] * (d[:, 1] * volume.spacing[1]) + ii[..., None] * (d[:, 2] * volume.spacing[2])
    inv = np.linalg.inv(aff)
    for k in ks:
        pts = inplane + positions[k]  # LPS (x, y, z) of each voxel of slice k
        mv = np.rint(pts @ inv[:3, :3].T + inv[:3, 3]).astype(int)  # nearest mask voxel (z, y, x)
        ok = np.all((mv >= 0) & (mv < np.array(mask.shape)), axis=-1)
        block = np.zeros(ok.shape, dtype=bool)
        block[ok] = mask[mv[ok, 0], mv[ok, 1], mv[ok, 2]]
        out[k, y_lo:y_hi, x_lo:x_hi] = block
    return out


def build_seg(ctx: ExportContext) -> SegBuild:
    """The export's Segmentation (built once, kept in ``ctx.shared["seg"]`` for the SR)."""
    if "seg" in ctx.shared:
        built: SegBuild = ctx.shared["seg"]
        return built
    headers = source_headers(ctx)
    descriptions: list[hd.seg.SegmentDescription] = []
    masks: list[np.ndarray] = []
    numbers: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for f in ctx.result.findings:
        m = mask_on_source(ctx, f)
        if m is None:
            skipped[f.id] = "the result holds no mask for it"
            continue
        if not m.any():
            skipped[f.id] = "its mask is empty on the source slices"
            continue
        n = len(descriptions) + 1
        numbers[f.id] = n
        masks.append(m)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=f.id,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_identification(),
            tracking_uid=f.tracking_uid, tracking_id=f.id,
            anatomic_regions=[codes.SCT.Lung],
        ))
    if not descriptions:
        ctx.shared["seg"] = SegBuild(None, {}, skipped)
        return ctx.shared["seg"]
    # Only the source slices a mask reaches are passed: frames elsewhere would be empty (and
    # omitted) anyway, and highdicom's checks run over the whole (slices, rows, columns,
    # segments) array, 4x faster on a chest CT with nodules on a quarter of its slices.
    vol = ctx.source.volume
    if vol.frame_numbers is None:
        ks = np.nonzero(np.any(np.stack([m.any(axis=(1, 2)) for m in masks]), axis=0))[0]
        sources = [headers[k] for k in ks]
        pixels = np.stack([m[ks] for m in masks], axis=-1)  # (frames = those slices, rows, columns, segments)
    else:  # a multi-frame source: one frame per source frame, in the source's frame order
        sources = source_instances(ctx)
        if len(sources) != 1:
            raise ExportError(f"the source CT spans {len(sources)} multi-frame instances: a SEG derives from one",
                              vol.source or None)
        pixels = np.zeros((int(sources[0].NumberOfFrames), *vol.shape[1:], len(masks)), dtype=bool)
        frames = np.asarray(vol.frame_numbers) - 1
        for i, m in enumerate(masks):
            pixels[frames, ..., i] = m
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=new_uid(ctx, "series/seg"), series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=new_uid(ctx, "seg"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=DEVICE_NAME, software_versions=software_version(),
        device_serial_number="0", content_label="NODULES",
        content_description="LungFuse nodule masks - " + NOT_FOR_DIAGNOSTIC_USE[:40],
        series_description="LungFuse nodules (NOT FOR DIAGNOSTIC USE)",
        omit_empty_frames=True,
    )
    if ctx.deidentify:
        mark_deidentified(seg)
    build = SegBuild(seg, numbers, skipped)
    ctx.shared["seg"] = build
    return build


def write_seg(ctx: ExportContext) -> list[tuple[str, bytes]]:
    """``seg.dcm``, or no file (logged) when there is nothing to segment."""
    build = build_seg(ctx)
    for fid, why in build.skipped.items():
        log.warning("SEG of case %s: finding %s has no segment: %s", ctx.case_label, fid, why)
    if build.dataset is None:
        log.warning("SEG of case %s not written: no finding with a mask (%d findings)", ctx.case_label,
                    len(ctx.result.findings))
        return []
    return [("seg.dcm", dataset_bytes(build.dataset))]


WRITERS["seg"] = write_seg
