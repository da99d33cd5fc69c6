"""The source CT of a result, as the DICOM exporters need it.

Research software, NOT for diagnostic use.

An export is made from a :class:`CaseResult` (fresh, or loaded from its JSON) plus the CT it was
computed on: SR and SEG reference the CT's SOP instances, SEG resamples the nodule masks onto the
CT's slices, and the key images are crops of the CT.  :func:`load_source` reads that CT again
(from ``identifiers.ct_path`` unless told otherwise) and checks that it is the same series,
slice for slice, as the result's; a CT that changed since the analysis is an error, not a
silently wrong export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from lungfuse.pipelines.analysis.result import CaseResult
from lungfuse.pipelines.core.errors import InputError
from lungfuse.pipelines.core.volume import CTVolume

__all__ = ["SourceCase", "load_source", "ExportError"]


class ExportError(InputError):
    """An export cannot be made from this result and CT (the message names the file)."""


@dataclass
class SourceCase:
    """The CT of a result.

    Attributes:
        volume: the CT (``hu`` z-y-x, the same slice order as the result's ``center_voxel`` z).
        datasets: the DICOM header of each slice, in ``volume.hu`` z order, read without pixel
            data (empty for NIfTI input, where no DICOM object can reference the source).
    """

    volume: CTVolume
    datasets: list[pydicom.Dataset] = field(default_factory=list)

    @property
    def is_dicom(self) -> bool:
        return bool(self.datasets)


def load_source(result: CaseResult, ct_path: str | os.PathLike[str] | None = None, *,
                volume: CTVolume | None = None) -> SourceCase:
    """Read the CT of ``result`` (``ct_path``, else ``result.identifiers.ct_path``).

    ``volume``: the already loaded CT (the GUI and the audit hold it), which skips the pixel read.

    Raises:
        ExportError: no CT path is known, or the CT found is not the series the result was
            computed on (other series UID, other slices); the message names the path.
        IngestError / FileNotFoundError: the CT cannot be read (as :func:`load_ct`).
    """
    from lungfuse.pipelines.io.dicom import load_ct

    ids = result.identifiers
    if volume is None:
        path = ct_path or (ids.ct_path if ids is not None else None)
        if not path:
            raise ExportError(f"result {result.case_id!r} names no CT path (de-identified or NIfTI-less result): "
                              "pass the CT explicitly")
        series = ids.series_instance_uid if ids is not None and ids.series_instance_uid else None
        volume = load_ct(path, series_uid=series, estimate_noise=False)
    src = Path(volume.source) if volume.source else None
    expected = result.provenance.source_sop_instance_uids
    if expected and list(volume.sop_instance_uids) != list(expected):
        raise ExportError(f"the CT is not the one this result was computed on: {len(volume.sop_instance_uids)} "
                          f"slices, result lists {len(expected)} (or another order or series)", src)
    datasets: list[pydicom.Dataset] = []
    if volume.sop_instance_uids and volume.source_files:
        seen: dict[str, pydicom.Dataset] = {}
        for f in volume.source_files:
            # a multi-frame source repeats one file per frame: read it once
            if f not in seen:
                try:
                    seen[f] = pydicom.dcmread(f, stop_before_pixels=True, force=True)
                except Exception as e:  # noqa: BLE001 - any read failure is the file's fault, named here
                    raise ExportError(f"cannot re-read the source slice header: {e}", f) from e
            datasets.append(seen[f])
    return SourceCase(volume=volume, datasets=datasets)
