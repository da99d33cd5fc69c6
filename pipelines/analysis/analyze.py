"""Case analysis: one chest CT (+ its report, optional) -> :class:`CaseResult`.

Research software, NOT for diagnostic use.

``analyze_case(case, settings, models=registry)`` is the one entry point the CLI, the GUI and the
batch audit call; each owns a :class:`~lungfuse.pipelines.inference.registry.ModelRegistry` that
holds the models between calls.  Stages (each timed in ``CaseResult.timings_s``; the machinery is
in :mod:`.pipeline`, the inputs in :mod:`.case`, the result in :mod:`.result`):

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
   :mod:`.consistency`) and the discordance rules; group claims ("multiple bilateral
   nodules") are satisfied by every finding that agrees with them.
8. **realign** - for each claim that is unmatched, breaks a rule, or scores below the
   consistency threshold: up to ``settings.realign_max_iter`` iterations that re-localise in
   the detector heatmap with the report's prior (iteration 1: the claimed lobe, 2: the claimed
   side, 3: both lungs; the peak threshold halves each time; candidates ranked by detection
   score x size agreement), re-crop and re-measure, recompute the features and align again.
   A candidate resolves the claim only when it agrees with it, scores at or above the
   operating threshold, and no clearly stronger finding (:func:`consistency.clearly_stronger`)
   lies in the claim's region; a weaker one is kept as a low-confidence match
   (``low_detection_score``) that leaves the case discordant.  Every iteration is recorded in
   ``consistency_trajectory``.
   Then the image side of the verdict: every >= 6 mm finding the report does not describe
   that scores at or above the val-calibrated missed-nodule threshold (``rules.json``) is a
   ``missed_nodule`` (``critical`` when the report denies it), below it a flag; and what the
   scan cannot judge (:mod:`.assessable`: no lung, too little lung, slices too thick).
9. **guidance** - Lung-RADS v2022 and Fleischner 2017 from the measured size and texture,
   labelled as guidance.

Each finding's segmentation mask is kept (NPZ + voxel->LPS affine) for DICOM SEG.

A ``cancel`` callable is asked between stages and inside the long loops (sliding windows,
per-finding work); a true answer raises :class:`~lungfuse.pipelines.core.errors.AnalysisCancelled`.
Nothing is written by the analysis itself, and :meth:`CaseResult.save` writes atomically.

Status (:func:`verdict`): ``concordant`` (nothing to resolve; also when there is no report,
flagged ``report_missing``), ``realigned`` (the loop resolved every problem), ``discordant``
(``reasons`` say why: a code, the ids concerned and a plain sentence) or ``not_assessable``
(the scan cannot support a verdict: no lung in view, lung coverage too short, or slices too
thick for the sizes in question; the coded reasons say which).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
from lungfuse.pipelines.analysis.codes import NOT_ASSESSABLE_CODES, Severity
from lungfuse.pipelines.analysis.fusing import environment
from lungfuse.pipelines.analysis.pipeline import Analysis, claim_id
from lungfuse.pipelines.analysis.result import (
    CaseResult,
    Claim,
    ClaimSet,
    Flag,
    Identifiers,
    Provenance,
    Reason,
    input_fingerprint,
)
from lungfuse.pipelines.core.errors import ConfigurationError
from lungfuse.pipelines.inference.registry import ModelRegistry

__all__ = ["analyze_case", "resolve_device", "verdict"]


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU is a :class:`ConfigurationError`."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError("device cuda asked for, but no CUDA device is available")
    return name


def analyze_case(case: Case | str | os.PathLike[str], settings: AnalysisSettings | None = None,
                 progress: Callable[[str, int, int], None] | None = None, *, models: ModelRegistry | None = None,
                 cancel: Callable[[], bool] | None = None) -> CaseResult:
    """Analyse one case (see the module docstring for the stages).

    Args:
        case: a :class:`Case` or just the CT path (report found beside it).
        settings: :class:`AnalysisSettings` (defaults when None).
        progress: called as ``progress(stage_name, stage_index, n_stages)`` at each stage start
            (the GUI runs this in a worker thread and forwards it to a progress bar).
        models: the :class:`ModelRegistry` that loads and keeps the models (and the image cache);
            None: a fresh one for this call (the models are loaded again: pass one to re-use them).
        cancel: asked between stages and inside the long loops; returning true stops the run.

    Raises:
        lungfuse.pipelines.core.errors.IngestError: the CT cannot be read (message names the path).
        lungfuse.pipelines.core.errors.ConfigurationError: bad settings (no CUDA for ``cuda``).
        lungfuse.pipelines.core.errors.AnalysisCancelled: ``cancel`` returned true.
        lungfuse.pipelines.core.errors.ModelIntegrityError: weights missing, unreadable, or whose
            SHA-256 does not match the manifest (message names the file).
    """
    import torch

    if not isinstance(case, Case):
        case = Case(case)
    s = settings or AnalysisSettings()
    registry = models if models is not None else ModelRegistry()
    t_all = time.perf_counter()
    prev_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(int(s.threads))
    try:
        device = resolve_device(s.device)
        t0 = time.perf_counter()
        loaded = registry.get(s.models_dir, device)
        a = Analysis(case, s, progress, loaded, registry.image_cache, cancel)
        a.timings["models"] = round(time.perf_counter() - t0, 4)
        a.load()
        a.preprocess()
        a.localise()
        a.read_report()
        a.assess()
        a.fuse()
        a.explain()
        a.check()
        a.realign()
        a.weigh_findings()
        a.guidance()
        a.check_cancel()
        a.masks()
    finally:
        torch.set_num_threads(prev_threads)
    a.timings["total"] = round(time.perf_counter() - t_all, 4)
    a.progress("done", 9, 9)  # a no-op callback when the caller passed none
    reasons: list[Reason] = []
    for r in a.reasons:  # each sentence once, in order of first appearance
        if all(r.text != q.text for q in reasons):
            reasons.append(r)
    status, reasons, set_aside = verdict(reasons, a.not_assessable, bool(a.resolved))
    a.flags.extend(set_aside)
    primary = max(a.findings, key=lambda f: (f.claim_id is not None, f.malignancy_probability or 0.0), default=None)
    if primary is not None:
        eaf = {"finding_id": primary.id, **primary.eaf}
    else:
        env = environment(a.vol, 0.0, a.text, a.text is not None)
        strategy = loaded.fusion.policy.decide(env)
        w = loaded.fusion.policy.default_weights[strategy]
        eaf = {"finding_id": None, "strategy": strategy, "weights": {"image": w[0], "text": w[1]},
               "environment": env.to_dict(), "note": "no finding: the policy's decision for this case's environment"}
    dev = device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(0)})"
    v = a.vol
    report_text = a.text.report.text if a.text else None
    case_id = case.case_id or v.patient_id or (a.ct_path.name if a.ct_path else "case")
    return CaseResult(
        case_id=case_id, status=status, reasons=reasons, findings=a.findings, claims=_claim_set(a),
        matches=a.matches, eaf=eaf, consistency_trajectory=a.trajectory, consistency_threshold=a.threshold,
        flags=a.flags, timings_s=a.timings, models=loaded.info, device=dev, volume=_volume_summary(a),
        report_present=a.text is not None, report_text=report_text,
        provenance=Provenance(
            analysis_uid=_new_uid(), created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            lungfuse_version=_lungfuse_version(),
            input_fingerprint=input_fingerprint(v.series_instance_uid, v.sop_instance_uids, report_text,
                                                None if v.sop_instance_uids else v.hu),
            source_sop_instance_uids=list(v.sop_instance_uids)),
        identifiers=Identifiers(patient_id=v.patient_id, study_instance_uid=v.study_instance_uid,
                                series_instance_uid=v.series_instance_uid,
                                frame_of_reference_uid=v.frame_of_reference_uid,
                                ct_path=str(a.ct_path) if a.ct_path else None, report_source=a.report_source),
        candidates=a.candidates, settings=asdict(s), arrays=a.arrays,
    )


def verdict(reasons: list[Reason], not_assessable: list[Reason], realigned: bool) -> tuple[str, list[Reason], list[Flag]]:
    """The case status from every reason: ``(status, reasons, flags set aside)``.

    * Scan-level ``not_assessable`` reasons (no lung, too little lung) override everything: what
      the analysis saw is not lung, so its other reasons are set aside as ``info`` flags.
    * Any discordance (a claim the image contradicts, a missed nodule) makes the case
      ``discordant``; a claim too small for the slices is listed among its reasons.
    * Otherwise a ``slices_too_thick`` reason makes it ``not_assessable``; with none, the case is
      ``realigned`` when the loop resolved a claim, else ``concordant``.
    """
    if not_assessable:
        aside = [Flag(r.code, f"set aside (scan not assessable): {r.text}", Severity.INFO, r.concerns) for r in reasons]
        return "not_assessable", list(not_assessable), aside
    if any(r.code not in NOT_ASSESSABLE_CODES for r in reasons):
        return "discordant", reasons, []
    if reasons:
        return "not_assessable", reasons, []
    return ("realigned" if realigned else "concordant"), [], []


def _claim_set(a: Analysis) -> ClaimSet | None:
    """The report's claims with their ids (None without a report)."""
    if a.claims is None:
        return None
    cl = a.claims
    return ClaimSet([Claim(claim_id(i), n) for i, n in enumerate(cl.nodules)], float(cl.completeness),
                    bool(cl.negative_statement), cl.lung_rads, cl.impression)


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def _lungfuse_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lungfuse")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _volume_summary(a: Analysis) -> dict[str, Any]:
    """Geometry and quality of the CT (nothing identifying: that is in ``CaseResult.identifiers``)."""
    v = a.vol
    return {"shape": list(v.shape), "spacing_mm": list(v.spacing), "affine_lps": v.affine.tolist(),
            "orientation": v.orientation, "noise_sigma_hu": v.quality.noise_sigma_hu,
            "slice_thickness_mm": v.quality.slice_thickness_mm, "lung_volume_ml": a.lung.volume_ml,
            "detection_threshold": a.op}
