"""DICOM Secondary Capture export (``sc_<finding>_<view>.dcm``): the key images, overlays burned in.

Research software, NOT for diagnostic use.

One RGB Secondary Capture Image (highdicom ``SCImage``) per key image of
:func:`~.keyimages.render_key_images` (each finding's axial and coronal view, the reader-added
findings' too): same study and patient as the source CT (de-identified with ``deidentify``,
from the same clean headers as the SEG and SR, :func:`~.dicom_common.source_headers`), one new
series for all of them.  They say "NOT FOR DIAGNOSTIC USE" three times: burned into the pixels
(the renderer draws it), in Image Comments, and in the series description; Burned In
Annotation is YES, Image Type DERIVED\\SECONDARY.

Pixel Spacing is the key image's (the CT crop is resampled to square pixels; the annotation
margins around it share the scale).  Patient Orientation follows the radiological display:
axial L\\P (columns towards the patient's left, rows towards posterior), coronal L\\F.  An axial
image references its source slice (Source Image Sequence); a coronal one is a reformat across
all slices and references none.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from lungfuse.pipelines.export.api import WRITERS, ExportContext
from lungfuse.pipelines.export.dicom_common import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSTIC_USE,
    SERIES_NUMBERS,
    dataset_bytes,
    mark_deidentified,
    new_uid,
    slice_frame,
    source_headers,
)
from lungfuse.pipelines.export.keyimages import KeyImage, render_key_images

__all__ = ["build_sc", "write_sc", "ORIENTATION"]

#: view -> Patient Orientation (direction of the columns, of the rows) of the rendered image
ORIENTATION = {"axial": ("L", "P"), "coronal": ("L", "F")}


def build_sc(ctx: ExportContext, key: KeyImage, instance_number: int) -> hd.sc.SCImage:
    """The Secondary Capture of one key image."""
    headers = source_headers(ctx)
    # the axial view's own slice; for a coronal one the slice through the finding's centre,
    # whose header gives the study and patient only
    k = key.slice_index if key.view == "axial" else int(round(_centre_z(ctx, key)))
    k = max(0, min(k, len(headers) - 1))
    ref = headers[k]
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=key.rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=new_uid(ctx, "series/sc"),
        series_number=SERIES_NUMBERS["sc"], sop_instance_uid=new_uid(ctx, f"sc/{key.finding_id}/{key.view}"),
        instance_number=instance_number, manufacturer=MANUFACTURER,
        pixel_spacing=tuple(float(s) for s in key.pixel_spacing_mm),  # type: ignore[arg-type]  # highdicom's hint says int
        patient_orientation=ORIENTATION[key.view],
        series_description="LungFuse key images (NOT FOR DIAGNOSTIC USE)",
    )
    sc.ImageComments = f"{NOT_FOR_DIAGNOSTIC_USE}. {key.caption}"[:10240]
    sc.BurnedInAnnotation = "YES"
    # General Series Laterality (2C, "paired body part"): dciodvfy wants it present; the series
    # holds both lungs' findings, so it is empty (unknown / both)
    sc.Laterality = ""
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = f"LungFuse key image, {key.view} view of finding {key.finding_id}"[:1024]
    if key.view == "axial":
        item = Dataset()
        item.ReferencedSOPClassUID = ref.SOPClassUID
        item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        frame = slice_frame(ctx, k)
        if frame is not None:  # a multi-frame source: the slice is one of its frames
            item.ReferencedFrameNumber = frame
        sc.SourceImageSequence = [item]
    if ctx.deidentify:
        mark_deidentified(sc)
    return sc


def _centre_z(ctx: ExportContext, key: KeyImage) -> float:
    """The z index (source slice) of the centre of the finding a key image shows."""
    from lungfuse.pipelines.core.geometry import lps_to_voxel

    for f in ctx.result.findings:
        if f.id == key.finding_id:
            return float(f.center_voxel[0])
    rv = ctx.result.review
    for r in rv.added_findings if rv is not None else []:
        if r.id == key.finding_id:
            return float(lps_to_voxel(ctx.source.volume.affine, r.center_lps_mm)[0])
    return ctx.source.volume.n_slices / 2


def write_sc(ctx: ExportContext) -> list[tuple[str, bytes]]:
    """``sc_<finding>_<view>.dcm`` for every key image (none when there is no finding)."""
    return [(f"sc_{key.finding_id}_{key.view}.dcm", dataset_bytes(build_sc(ctx, key, i)))
            for i, key in enumerate(render_key_images(ctx), start=1)]


WRITERS["sc"] = write_sc
