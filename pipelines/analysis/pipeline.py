"""The stages of case analysis: one :class:`Analysis` per :func:`~lungfuse.pipelines.analysis.analyze.analyze_case` call.

Research software, NOT for diagnostic use.

The stages (load, preprocess, localise, report, fuse, explain, consistency, realign, guidance) are
told in :mod:`lungfuse.pipelines.analysis.analyze`.  Internally findings and claims are list
positions; everything that leaves this module names them by id (``F1`` = position 0,
``C1`` = the first claim of ``ReportClaims.nodules``): findings are only ever appended, or the last
one removed (a rejected realignment candidate), so ids never move.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from lungfuse.pipelines.analysis.assessable import SIZE_IN_QUESTION_MM, LungCoverage, claim_too_small, scan_not_assessable
from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
from lungfuse.pipelines.analysis.codes import ReasonCode, Severity
from lungfuse.pipelines.analysis.consistency import (
    FindingView,
    clearly_stronger,
    group_members,
    is_group,
    match_claims,
    pair_discordances,
    sides_disagree,
)
from lungfuse.pipelines.analysis.fusing import (
    Fused,
    ReportText,
    crop_affine,
    environment,
    focus_text,
    fuse,
    fused_probability_batch,
    to_report_span,
)
from lungfuse.pipelines.analysis.result import ClaimMatch, Finding, Flag, Reason, input_fingerprint
from lungfuse.pipelines.analysis.wording import (
    benign_wording_sentence,
    discordance_code,
    low_consistency_sentence,
    low_score_sentence,
    no_match_sentence,
    phrases,
    region_text,
    where,
)
from lungfuse.pipelines.core.errors import AnalysisCancelled
from lungfuse.pipelines.imaging.measure import NoduleMeasurement, measure_nodule
from lungfuse.pipelines.inference.registry import ImageCache, LoadedModels
from lungfuse.pipelines.io.case_files import find_report
from lungfuse.pipelines.io.dicom import CTVolume, load_ct
from lungfuse.pipelines.io.report import Report, load_report
from lungfuse.pipelines.nlp.claims import NoduleClaim, ReportClaims, extract_claims

__all__ = ["Analysis", "claim_id", "claim_index", "finding_id", "image_key"]


def image_key(vol: CTVolume, models: LoadedModels, s: AnalysisSettings) -> tuple:
    """Identity of a CT for the image cache: UIDs, geometry and a strided checksum of the voxels."""
    import hashlib

    sample = np.ascontiguousarray(vol.hu[:: max(1, vol.shape[0] // 16), ::7, ::7])
    digest = hashlib.sha1(sample.tobytes()).hexdigest()
    return (vol.series_instance_uid, tuple(vol.shape), tuple(np.round(vol.affine, 4).ravel()), digest,
            models.info["detector"]["sha256"], models.device, s.candidate_threshold, s.sw_batch_size, s.amp)


class Analysis:
    """State of one :func:`~lungfuse.pipelines.analysis.analyze.analyze_case` call, one method per stage.

    ``models``: the loaded models; ``image_cache``: where preprocessing and detector maps are
    kept between calls (the model registry's); ``cancel``: called between stages and inside the
    long loops, a true return raises :class:`AnalysisCancelled`.
    """

    def __init__(self, case: Case, settings: AnalysisSettings, progress: Callable[[str, int, int], None] | None,
                 models: LoadedModels, image_cache: ImageCache | None = None,
                 cancel: Callable[[], bool] | None = None) -> None:
        self.case = case
        self.s = settings
        self.progress = progress or (lambda stage, i, n: None)
        self.models = models
        self.image_cache = image_cache
        self.cancel = cancel
        self.timings: dict[str, float] = {}
        self.flags: list[Flag] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.trajectory: list[dict[str, Any]] = []

    # -- stage helpers ------------------------------------------------------------------------
    def check_cancel(self) -> None:
        """Raise :class:`AnalysisCancelled` when the caller's ``cancel`` says so."""
        if self.cancel is not None and self.cancel():
            raise AnalysisCancelled("analysis cancelled")

    def _stage(self, name: str, i: int, n: int = 9) -> float:
        self.check_cancel()
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
        v = self.vol
        # what identifies the image (not the report): the input fingerprint without a report text
        self.image_identity = input_fingerprint(v.series_instance_uid, v.sop_instance_uids, None,
                                                None if v.sop_instance_uids else v.hu)
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
            self._flag(ReasonCode.REPORT_EMPTY, "report_empty: the report has no text; analysed as missing")
            self.report = None
        if self.report is None:
            self._flag(ReasonCode.REPORT_MISSING, "report_missing: no report; consistency not assessed, image-only fusion")
        for w in self.vol.warnings:
            self._flag(ReasonCode.INGEST_WARNING, f"ingest_{w.code}: {w.message}")
        self._done("load", t0)

    # -- 2. preprocess ------------------------------------------------------------------------
    def preprocess(self) -> None:
        from lungfuse.pipelines.imaging.lung import LobeLocator, segment_lungs
        from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM, to_model_grid

        t0 = self._stage("preprocess", 1)
        v = self.vol
        self.cached = None
        if self.s.cache_image and self.image_cache is not None:
            self.image_key = image_key(v, self.models, self.s)
            self.cached = self.image_cache.get(self.image_key)
        if self.cached is not None:
            self.grid, self.lung, self.lobes, _ = self.cached
            self._flag(ReasonCode.IMAGE_CACHE,
                       "image_cache: preprocessing and detection re-used from an earlier analysis of this CT")
            self._done("preprocess", t0)
            return
        self.grid = to_model_grid(v.hu, v.spacing, v.affine, target_mm=DETECTION_SPACING_MM)
        # the canonical grid has x -> patient Left, y -> Posterior, z -> Superior
        self.lung = segment_lungs(self.grid.array, (DETECTION_SPACING_MM,) * 3, x_axis_sign=1.0, working_mm=3.0)
        self.lobes = LobeLocator(self.lung, y_axis_sign=1.0, z_axis_sign=1.0)
        if self.lung_mask is None:
            self._flag(ReasonCode.NO_LUNGS,
                       "no_lungs: no lung found by the classical segmentation; the whole volume was searched")
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
                               amp=self.s.amp, normalized=True, cancel=self.cancel)
            if m.fpr is not None:  # second stage: re-score every candidate (see pipelines.fpr)
                self.dets.raw = list(self.dets)
                self.dets[:] = self._rescore(self.dets.raw)
            if self.s.cache_image and self.image_cache is not None:
                self.image_cache.put(self.image_key, (self.grid, self.lung, self.lobes, self.dets))
        self.op = float(self.s.detection_threshold if self.s.detection_threshold is not None else m.operating_threshold)
        self.findings: list[Finding] = []
        self.meas: list[NoduleMeasurement] = []
        self.grid_centres: list[np.ndarray] = []
        for z, y, x, score, diam in self.dets:
            self.check_cancel()
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
        lps = self.grid.lps(gc)
        f = Finding(
            id=finding_id(len(self.findings)), tracking_uid=self._tracking_uid(lps), center_voxel=[float(v) for v in src],
            center_lps_mm=[float(v) for v in lps], bbox_voxel=[lo.tolist(), hi.tolist()],
            diameter_mm=float(me.long_axis_mm), mean_diameter_mm=float(me.mean_diameter_mm),
            volume_mm3=float(me.volume_mm3), side=side, lobe=lobe, detection_score=float(score), texture=me.texture,
            calcified=bool(me.calcified), measurement=me.to_dict(), source=source, lobes_possible=possible,
            long_axis_mm=float(me.long_axis_mm), short_axis_mm=float(me.short_axis_mm),
            solid_component_mm=None if me.solid_component_mm is None else float(me.solid_component_mm),
        )
        self.findings.append(f)
        self.meas.append(me)
        self.grid_centres.append(gc)
        return f

    def _tracking_uid(self, lps: Sequence[float]) -> str:
        """A DICOM UID for a finding at ``lps`` (mm): derived from the CT's identity and the position
        rounded to 1 mm, so that analysing the same CT again (another report, other settings) gives
        a finding at the same place the same UID and a reader's review finds it again."""
        from pydicom.uid import generate_uid

        where_mm = ",".join(f"{round(float(c)):d}" for c in lps)
        return str(generate_uid(entropy_srcs=["lungfuse finding", self.image_identity, where_mm]))

    def _flag(self, code: ReasonCode, text: str, *concerns: str | None) -> None:
        self.flags.append(Flag(code, text, concerns=tuple(c for c in concerns if c)))

    def _view(self, i: int) -> FindingView:
        f, me = self.findings[i], self.meas[i]
        return FindingView(f.side, f.lobe, f.diameter_mm, f.texture, me.calcified_fraction, f.detection_score,
                           tuple(f.lobes_possible), mean_diameter_mm=f.mean_diameter_mm)

    # -- 4. report ----------------------------------------------------------------------------
    def read_report(self) -> None:
        from lungfuse.models.text import encode_texts

        t0 = self._stage("report", 3)
        self.text: ReportText | None = None
        self.claims: ReportClaims | None = None
        if self.report is not None:
            cl = extract_claims(self.report)
            focus, pieces = focus_text(self.report, cl)
            enc = encode_texts([focus], max_length=96, device=self.models.device, backbone=self.models.text_encoder())
            self.text = ReportText(self.report, cl, focus, pieces, enc.sentence[0].numpy(), enc)
            self.claims = cl
        self.positive = [i for i, n in enumerate(self.claims.nodules) if not n.negated] if self.claims else []
        # singular claims are matched one-to-one; group claims ("multiple bilateral nodules") are
        # satisfied by any of the remaining findings that agree with them
        single = [ci for ci in self.positive if self.claims and not is_group(self.claims.nodules[ci])]
        views = [self._view(i) for i in range(len(self.findings))]
        idx = match_claims([self.claims.nodules[ci] for ci in single] if self.claims else [], views)
        self.match: dict[int, int | None] = {ci: fi for ci, fi in zip(single, idx, strict=True)}
        self.group: dict[int, list[int]] = {}
        taken = {fi for fi in idx if fi is not None}
        for ci in self.positive:
            if ci not in self.match and self.claims is not None:
                members = [fi for fi in group_members(self.claims.nodules[ci], views, self.s.size_tol_mm, self.s.size_tol_rel)
                           if fi not in taken and all(fi not in m for m in self.group.values())]
                self.group[ci] = members
        self._done("report", t0)

    def claim_of(self) -> dict[int, int]:
        """Finding position -> the claim that describes it (singular matches and group members)."""
        out = {fi: ci for ci, members in self.group.items() for fi in members}
        out.update({fi: ci for ci, fi in self.match.items() if fi is not None})
        return out

    # -- 5. fuse ------------------------------------------------------------------------------
    def _claim_vec(self, ci: int | None) -> np.ndarray | None:
        from lungfuse.pipelines.nlp.text_features import claim_features

        if self.text is None or ci is None:
            return None
        return claim_features(self.text.claims, self.text.claims.nodules[ci])

    def _crop(self, i: int) -> np.ndarray:
        from lungfuse.pipelines.imaging.crops import extract_crop, normalize_hu

        return normalize_hu(extract_crop(self.vol.hu, self.vol.spacing, self.findings[i].center_voxel))

    def _fuse_finding(self, i: int, ci: int | None) -> Fused:
        f = self.findings[i]
        mentioned = ci is not None and self.text is not None
        env = environment(self.vol, f.detection_score, self.text, mentioned)
        fz = fuse(self.models, self._crop(i), self.text.sentence if mentioned else None,  # type: ignore[union-attr]
                   self._claim_vec(ci) if mentioned else None, env)
        f.malignancy_probability = fz.probs["afa_eaf"]
        f.malignancy_by_variant = fz.probs
        f.eaf = {"strategy": fz.strategy, "weights": {"image": fz.weights[0], "text": fz.weights[1]},
                 "environment": fz.env, "report_used": mentioned}
        f.afa = {"cosine": fz.cos, "w_img_mean": fz.w_img_mean, "w_txt_mean": fz.w_txt_mean}
        f.claim_id = claim_id(ci) if mentioned else None
        f.consistency = float(self.models.consistency.score(fz.cos)) if mentioned else None
        return fz

    def fuse(self) -> None:
        t0 = self._stage("fuse", 4)
        claim_of = self.claim_of()
        for i in range(len(self.findings)):
            self.check_cancel()
            self._fuse_finding(i, claim_of.get(i))
        self._done("fuse", t0)

    # -- 6. explain ---------------------------------------------------------------------------
    def explain(self) -> None:
        t0 = self._stage("explain", 5)
        if self.s.explain:
            # word occlusion re-encodes the report once per word: only for findings the report describes
            word_findings = [i for i, f in enumerate(self.findings) if f.claim_id is not None][: self.s.max_word_findings]
            from lungfuse.pipelines.inference.explain import detection_attributions, patch_around

            pats = [patch_around(self.norm_grid, c) for c in self.grid_centres]
            atts, _ = detection_attributions(self.models.detector, np.stack([p for p, _ in pats]) if pats
                                             else np.zeros((0, 1, 1, 1), np.float32), device=self.models.device)
            for i in range(len(self.findings)):
                self.check_cancel()
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
        key = f.id
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
        caff = crop_affine(self.vol.affine, self.vol.spacing, f.center_voxel)
        self.arrays[f"{key}_gradcam"] = cam.astype(np.float16)
        f.heatmaps["gradcam"] = {"array": f"{key}_gradcam", "affine_lps": caff.tolist(), "spacing_mm": 1.25,
                                 "kind": "Grad-CAM of the image-only malignancy logit (nodule encoder)"}
        ci = claim_index(f.claim_id)
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
        for k, (ps, pe, phrase) in enumerate(phrases(claim, self.text.focus, self.text.pieces)):
            idx = tokens_in_span(enc.offsets[0], ps, pe)
            if not idx:
                continue
            hm = phrase_heatmap(attn[0].cpu(), idx, spatial, out_shape=crop.shape)
            name = f"{key}_phrase{k}"
            self.arrays[name] = hm.astype(np.float16)
            rs, re_ = to_report_span(self.text.pieces, ps, pe)
            f.phrases.append({"text": phrase, "report_span": [rs, re_], "array": name, "affine_lps": caff.tolist()})
        if words:
            self._word_attribution(i, crop)

    def _word_attribution(self, i: int, crop: np.ndarray) -> None:
        from lungfuse.models.text import encode_texts
        from lungfuse.pipelines.inference.explain import word_occlusion
        from lungfuse.pipelines.nlp.text_features import claim_features, pick_target_claim

        f = self.findings[i]
        assert self.text is not None
        env = environment(self.vol, f.detection_score, self.text, True)

        def score(texts: list[str]) -> np.ndarray:
            enc = encode_texts(texts, max_length=96, batch_size=64, device=self.models.device,
                               backbone=self.models.text_encoder())
            vecs = []
            for t in texts:
                cl = extract_claims(t)
                vecs.append(claim_features(cl, pick_target_claim(cl)))
            return fused_probability_batch(self.models, crop, enc.sentence.numpy(), np.stack(vecs), env)

        ws = word_occlusion(self.text.focus, score)
        f.word_attributions = []
        for w in ws:
            rs, re_ = to_report_span(self.text.pieces, w.start, w.end)
            f.word_attributions.append({"word": w.word, "start": rs, "end": re_, "score": w.score})

    # -- 7 + 8. consistency and realignment ----------------------------------------------------
    def check(self) -> None:
        t0 = self._stage("consistency", 6)
        thr = self.models.consistency.threshold
        self.threshold = thr
        self.reasons: list[Reason] = list(self.soft_reasons)
        self.matches: list[ClaimMatch] = []
        self.problems: dict[int, list[str]] = {}
        if self.text is None:
            self.trajectory.append({"iteration": 0, "note": "no report: nothing to check", "pairs": []})
            self._done("consistency", t0)
            return
        cl = self.text.claims
        pairs: list[dict[str, Any]] = []
        for ci in self.positive:
            claim = cl.nodules[ci]
            if ci in self.group:  # a group claim: its members agree with it by construction
                for gi in self.group[ci]:
                    pairs.append({"claim_id": claim_id(ci), "finding_id": finding_id(gi), "group": True,
                                  "consistency": self.findings[gi].consistency, "discordances": []})
                continue
            fi = self.match.get(ci)
            if fi is None:
                probs = [no_match_sentence(claim)]
                cons = None
            else:
                probs = self._pair_problems(claim, fi)
                cons = self.findings[fi].consistency
                self.findings[fi].discordances = list(probs)
            pairs.append({"claim_id": claim_id(ci), "finding_id": finding_id(fi), "consistency": cons, "discordances": probs})
            if probs:
                self.problems[ci] = probs
        self.trajectory.append({"iteration": 0, "note": "initial matching", "pairs": pairs,
                                "min_consistency": _min([p["consistency"] for p in pairs])})
        self._done("consistency", t0)

    def _pair_problems(self, claim: NoduleClaim, fi: int) -> list[str]:
        """Why claim ``claim`` and (fused) finding ``fi`` disagree: the rules of
        :func:`pair_discordances`, the benign-wording rule and a consistency below the threshold.

        Benign wording: the claim calls the nodule benign (``NoduleClaim.benign``: benign, granuloma,
        hamartoma, a benign calcification pattern, Lung-RADS 2) while the finding's malignancy
        probability is at or above the fusion model's operating point (its val-picked
        ``decision_threshold``, the point a consumer compares a probability with)."""
        f = self.findings[fi]
        probs = pair_discordances(claim, self._view(fi), self.s.size_tol_mm, self.s.size_tol_rel)
        op = self.malignancy_operating_point
        if claim.benign is True and f.malignancy_probability is not None and f.malignancy_probability >= op:
            probs.append(benign_wording_sentence(f.malignancy_probability, op))
        if f.consistency is not None and f.consistency < self.threshold:
            probs.append(low_consistency_sentence(f.consistency, self.threshold))
        return probs

    @property
    def malignancy_operating_point(self) -> float:
        """The operating point of the malignancy probability the findings carry (``afa_eaf``)."""
        return float(self.models.calibration.get("afa_eaf", {}).get("decision_threshold", 0.5))

    def realign(self) -> None:
        t0 = self._stage("realign", 7)
        self.resolved: set[int] = set()
        if self.text is not None:
            for ci in list(self.problems):
                self._realign_claim(ci)
            for ci in self.positive:
                claim = self.text.claims.nodules[ci]
                if ci in self.group:
                    members = self.group[ci]
                    for gi in members:
                        self.matches.append(ClaimMatch(claim_id(ci), finding_id(gi), "initial", [],
                                                       self.findings[gi].consistency))
                    if not members:
                        self._flag(ReasonCode.CLAIM_UNMATCHED,
                                   f"claim_unmatched: the group claim '{claim.text.strip()}' has no agreeing image finding "
                                   f"(its nodules may be below the detector's operating threshold)", claim_id(ci))
                        self.matches.append(ClaimMatch(claim_id(ci), None, "unresolved", [], None))
                    continue
                fi = self.match.get(ci)
                if ci in self.problems and ci not in self.resolved:
                    if self.thickness_mm is not None and claim_too_small(claim.size_mm, self.thickness_mm):
                        self.reasons.append(Reason(ReasonCode.SLICES_TOO_THICK,
                            f"not assessable: '{claim.text.strip()}': the slices are {self.thickness_mm:.1f} mm thick, "
                            f"thicker than the {'claimed nodule' if claim.size_mm is not None else 'nodules in question'} "
                            f"({claim.size_mm if claim.size_mm is not None else SIZE_IN_QUESTION_MM:g} mm), "
                            f"so the image can neither confirm nor refute it", concerns=(claim_id(ci),)))
                    elif fi is None and claim.uncertain:
                        self._flag(ReasonCode.CLAIM_UNMATCHED,
                                   f"claim_unmatched: the hedged claim '{claim.text}' has no image match", claim_id(ci))
                    else:
                        for p in self.problems[ci]:
                            self.reasons.append(Reason(discordance_code(p), f"'{claim.text.strip()}': {p}",
                                                       concerns=tuple(x for x in (claim_id(ci), finding_id(fi)) if x)))
                    by = "unresolved"
                else:
                    by = "realignment" if ci in self.resolved else "initial"
                cons = self.findings[fi].consistency if fi is not None else None
                self.matches.append(ClaimMatch(claim_id(ci), finding_id(fi), by,
                                               list(self.problems.get(ci, [])) if by == "unresolved" else [], cons))
        self._done("realign", t0)

    # -- the verdict's image side: findings the report does not describe, what cannot be judged ---------
    def weigh_findings(self) -> None:
        """The missed-nodule rule (see :mod:`.analyze`): each >= 6 mm detector finding the report does
        not describe is a discordance when its score reaches the val-calibrated missed-nodule
        threshold (``missed_nodule``, or ``negative_report_with_finding`` for a report that
        describes no nodule; ``critical`` when the report explicitly denies it), else a flag."""
        if self.text is None:
            return
        rules = self.models.rules
        thr = max(float(rules.missed_nodule_threshold if rules.missed_nodule_threshold is not None else self.op), self.op)
        self.missed_threshold = thr
        dmin = rules.missed_nodule_min_diameter_mm
        cl = self.text.claims
        mentioned = set(self.claim_of())
        for k, f in enumerate(self.findings):
            if k in mentioned or f.source != "detector" or f.diameter_mm < dmin:
                continue
            denied = self._denied(k)
            if f.detection_score < thr:
                self._flag(ReasonCode.UNMENTIONED_FINDING,
                           f"unmentioned_finding: finding {f.id} ({f.diameter_mm:.0f} mm, {where(f)}, "
                           f"score {f.detection_score:.2f}, below the missed-nodule threshold {thr:.2f}) "
                           f"is not described in the report", f.id)
                continue
            sev = Severity.CRITICAL if denied else Severity.DISCORDANCE
            if not self.positive:
                self.reasons.append(Reason(ReasonCode.NEGATIVE_REPORT_WITH_FINDING,
                    f"the report {'states there are no nodules' if cl.negative_statement else 'describes no nodule'}, "
                    f"but the image shows a {f.diameter_mm:.0f} mm nodule in the {where(f)} "
                    f"(finding {f.id}, detector score {f.detection_score:.2f} >= missed-nodule threshold {thr:.2f})",
                    severity=sev, concerns=(f.id,)))
            else:
                self.reasons.append(Reason(ReasonCode.MISSED_NODULE,
                    f"missed nodule: the image shows a {f.diameter_mm:.0f} mm nodule in the {where(f)} (finding {f.id}, "
                    f"detector score {f.detection_score:.2f} >= missed-nodule threshold {thr:.2f}) that the report "
                    f"does not describe{'; the report states there is no other nodule there' if denied else ''}",
                    severity=sev, concerns=(f.id,)))

    def assess(self) -> None:
        """What the analysis cannot judge (:mod:`.assessable`): ``self.not_assessable`` holds the
        scan-level reasons (no lung, too little lung), which override any verdict; a negative report
        on slices thicker than the nodules in question adds a ``slices_too_thick`` reason, which
        makes the case not assessable unless something else makes it discordant."""
        from lungfuse.pipelines.imaging.preprocess import DETECTION_SPACING_MM

        v = self.vol
        self.thickness_mm = max(float(v.quality.slice_thickness_mm or 0.0), float(v.spacing[0])) if v.shape[0] > 1 \
            else float(v.quality.slice_thickness_mm or v.spacing[0])
        self.coverage = LungCoverage.from_mask(self.lung.lungs, (DETECTION_SPACING_MM,) * 3)
        self.not_assessable: list[Reason] = []
        self.soft_reasons: list[Reason] = []
        if self.text is None:
            return
        negative = not self.positive
        self.not_assessable = [Reason(code, text, severity=Severity.WARNING)
                               for code, text in scan_not_assessable(self.coverage, report_negative=negative)]
        if negative and not self.not_assessable and claim_too_small(None, self.thickness_mm):
            self.soft_reasons.append(Reason(ReasonCode.SLICES_TOO_THICK,
                f"not assessable: the slices are {self.thickness_mm:.1f} mm thick, thicker than the {SIZE_IN_QUESTION_MM:g} mm "
                f"nodules a reader must not miss, so a report of no nodules cannot be checked"))

    def _denied(self, k: int) -> bool:
        """Whether a negated claim of the report ("No other pulmonary nodules", "no nodule in the
        left lung") covers finding ``k``'s place, or the report states there are no nodules."""
        assert self.text is not None
        cl = self.text.claims
        if cl.negative_statement:
            return True
        v = self._view(k)
        for c in cl.nodules:
            if c.negated and not sides_disagree(c, v) and not (c.lobe and v.lobe and not v.lobe_agrees(c.lobe)):
                return True
        return False

    def _region_ok(self, g: Sequence[float], side: str | None, claim: NoduleClaim, level: str) -> bool:
        if level == "lobe":
            return (claim.lobe is None or claim.lobe in self.lobes.plausible(g)) and \
                (claim.side is None or claim.side == "bilateral" or side == claim.side)
        if level == "side":
            return claim.side is None or claim.side == "bilateral" or side == claim.side
        return True

    def _stronger(self, ci: int, k: int) -> int | None:
        """A finding clearly stronger than candidate ``k`` (:func:`consistency.clearly_stronger`) in
        claim ``ci``'s region (its lobe, else its side, else the lungs) that no other claim describes."""
        assert self.text is not None
        claim = self.text.claims.nodules[ci]
        owner = self.claim_of()
        kv = self._view(k)
        best = None
        for j, f in enumerate(self.findings):
            if j == k or f.detection_score < self.op or owner.get(j, ci) != ci:
                continue
            v = self._view(j)
            if sides_disagree(claim, v) or (claim.lobe and v.lobe and not v.lobe_agrees(claim.lobe)):
                continue
            if clearly_stronger(v, kv, self.s.size_tol_mm, self.s.size_tol_rel) and (
                    best is None or f.detection_score > self.findings[best].detection_score):
                best = j
        return best

    def _realign_claim(self, ci: int) -> None:
        """Up to ``realign_max_iter`` re-localisations of claim ``ci`` (see :mod:`.analyze`, stage 8).

        A candidate resolves the claim only when it agrees with it, scores at or above the
        operating threshold (it would pass as a finding) and no clearly stronger finding lies in the
        claim's region.  A candidate whose only fault is its score is kept as a low-confidence match
        (``low_detection_score``, the case stays discordant) when nothing better is found.
        """
        from lungfuse.models.image import decode_peaks

        assert self.text is not None
        claim = self.text.claims.nodules[ci]
        levels = [lv for lv, ok in (("lobe", claim.lobe is not None), ("side", claim.side is not None), ("lungs", True)) if ok]
        prob = self.dets.prob_map
        dmap = self.dets.diameter_map
        off = np.asarray(self.dets.map_offset)
        tried: set[tuple[int, int, int]] = set()
        size = claim.size_mm
        # (rank, -consistency, finding, problems, new candidate (grid centre, score, diameter) or None)
        # of every attempt that could explain the claim: the closest one explains an unresolved claim
        # best ("the 33 mm mass is there, but on the left"); an unmatched start ranks below a
        # low-confidence candidate with the same number of problems
        start_fi = self.match.get(ci)
        Attempt = tuple[float, float, int | None, list[str], tuple[tuple[int, int, int], float, float] | None]
        attempts: list[Attempt] = [
            (len(self.problems[ci]) + (0.5 if start_fi is None else 0.0),
             -(self.findings[start_fi].consistency or 0.0) if start_fi is not None else 0.0,
             start_fi, list(self.problems[ci]), None)]
        for it in range(1, self.s.realign_max_iter + 1):
            self.check_cancel()
            level = levels[min(it - 1, len(levels) - 1)]
            thr = max(self.s.candidate_threshold * 0.5 ** (it - 1), self.s.realign_min_score, 1e-3)
            entry: dict[str, Any] = {"iteration": it, "claim_id": claim_id(ci), "region": region_text(claim, level),
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
                scored = [(sc2 * (math.exp(-0.5 * (math.log(max(d2, 1.0) / size) / 0.35) ** 2) if size else 1.0),
                           (z2, y2, x2), sc2, d2)
                          for z2, y2, x2, sc2, d2 in self._rescore(ranked) if sc2 >= self.s.realign_min_score]
                scored.sort(key=lambda r: -r[0])
                best = scored[0] if scored else None
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
            if fi is None:
                self._add_finding(g, sc, d, source="realignment")
                fi = len(self.findings) - 1
            f = self.findings[fi]
            sc = f.detection_score if not new else sc
            self._fuse_finding(fi, ci)
            probs = self._pair_problems(claim, fi)
            stronger = self._stronger(ci, fi)
            fault = None
            if stronger is not None:
                fs = self.findings[stronger]
                fault = (f"a stronger finding {fs.id} ({fs.diameter_mm:.0f} mm, score {fs.detection_score:.2f}) lies in the "
                         f"claimed region: the candidate ({f.diameter_mm:.1f} mm, score {sc:.2f}) cannot confirm the claim")
            elif sc < self.op:
                fault = low_score_sentence(sc, self.op)
            ok = not probs and fault is None
            entry.update({
                "candidate": {"finding_id": finding_id(fi), "center_lps_mm": f.center_lps_mm, "score": float(sc),
                              "diameter_mm": f.diameter_mm, "side": f.side, "lobe": f.lobe, "new": new},
                "consistency": f.consistency, "discordances": probs + ([fault] if fault else []), "accepted": ok,
                "stronger_finding": finding_id(stronger),
                "changed": (f"re-localised to a {'new' if new else 'known'} candidate in the {where(f)} "
                            f"(score {sc:.2f}, {f.diameter_mm:.1f} mm), re-cropped and re-aligned"),
            })
            self.trajectory.append(entry)
            if ok:
                self._rematch(ci, fi)
                f.discordances = []
                self.resolved.add(ci)
                return
            owned = self.claim_of().get(fi, ci) != ci  # the finding another claim describes
            if stronger is None and not owned and (not new or not probs):
                # a known finding with fewer problems, or a new one whose only fault is its score
                attempts.append((float(len(probs) + (1 if fault else 0)), -(f.consistency or 0.0), None if new else fi,
                                 probs + ([fault] if fault else []), (g, float(sc), float(d)) if new else None))
            if new:  # a rejected new candidate does not stay a finding (unless kept below as a low-confidence match)
                self.findings.pop()
                self.meas.pop()
                self.grid_centres.pop()
            else:
                own = self.claim_of().get(fi)
                if own != ci:
                    self._fuse_finding(fi, own)  # restore the finding's fusion with its own claim (or none)
        rank, _, best_fi, best_probs, pending = min(attempts, key=lambda a: (a[0], a[1]))
        if pending is not None and rank < attempts[0][0]:
            g, sc, d = pending
            self._add_finding(g, sc, d, source="realignment")
            best_fi = len(self.findings) - 1
        if best_fi is not None and best_fi != start_fi and rank < attempts[0][0]:
            self._rematch(ci, best_fi)
            self.problems[ci] = best_probs
            self.findings[best_fi].discordances = list(best_probs)
            what = ("a low-confidence match" if pending is not None
                    else f"its closest image finding ({len(best_probs)} remaining discordance(s))")
            self._flag(ReasonCode.CLAIM_ATTRIBUTED,
                       f"claim_attributed: unresolved claim {claim_id(ci)} is attributed to {finding_id(best_fi)}, {what}",
                       claim_id(ci), finding_id(best_fi))

    def _rematch(self, ci: int, fi: int) -> None:
        """Attribute claim ``ci`` to finding ``fi`` (the previous finding falls back to image-only;
        a group claim that held ``fi`` lets it go)."""
        for members in self.group.values():
            if fi in members:
                members.remove(fi)
        old = self.match.get(ci)
        if old is not None and old != fi:
            self.findings[old].claim_id = None
            self.findings[old].discordances = []
            self._fuse_finding(old, None)
        self.match[ci] = fi
        self._fuse_finding(fi, ci)

    # -- 9. guidance --------------------------------------------------------------------------
    def guidance(self) -> None:
        from lungfuse.pipelines.analysis.guidance import guidance_for

        t0 = self._stage("guidance", 8)
        for f in self.findings:
            ci = claim_index(f.claim_id)
            claim = self.text.claims.nodules[ci] if (self.text and ci is not None) else None
            calc_pattern = claim.calcification_pattern if claim is not None else None
            g = guidance_for(max(f.diameter_mm, 0.1), None if f.texture == "unknown" else f.texture,
                             mean_diameter_mm=min(f.mean_diameter_mm, f.diameter_mm) or None,
                             # part-solid: Lung-RADS v2022 categorises by the solid component (0 mm: none found)
                             solid_component_mm=(f.solid_component_mm or None) if f.texture == "part-solid" else None,
                             calcification_pattern=calc_pattern, calcified=f.calcified or None,
                             suspicious_features=bool(claim is not None and claim.margin == "spiculated"))
            f.guidance = g
            f.lung_rads = g["lung_rads"]["category"]
        self._done("guidance", t0)


    # -- masks (after every stage: the realignment loop may add findings) ------------------------
    def masks(self) -> None:
        """Each finding's segmentation mask (bool, z-y-x on the 1.5 mm grid, cut to its box) into
        :attr:`arrays`, with its voxel->LPS affine in ``Finding.mask``."""
        for f, me in zip(self.findings, self.meas, strict=True):
            aff = self.grid.affine.copy()
            aff[:3, 3] = self.grid.lps(np.asarray(me.bbox_lo, float))
            name = f"{f.id}_mask"
            assert me.mask is not None  # measure_nodule sets every measurement's mask (component or ball)
            self.arrays[name] = np.asarray(me.mask, bool)
            f.mask = {"array": name, "affine_lps": aff.tolist(), "spacing_mm": 1.5, "shape": list(me.mask.shape),
                      "kind": ("segmentation (HU threshold, connected component)" if me.source == "segmentation"
                               else "sphere of the detector's diameter estimate (no segmentation)")}


@overload
def finding_id(i: int) -> str: ...
@overload
def finding_id(i: None) -> None: ...
@overload
def finding_id(i: int | None) -> str | None: ...
def finding_id(i: int | None) -> str | None:
    """The id of the finding at list position ``i`` (``F1`` for 0); None for None."""
    return None if i is None else f"F{i + 1}"


@overload
def claim_id(i: int) -> str: ...
@overload
def claim_id(i: None) -> None: ...
@overload
def claim_id(i: int | None) -> str | None: ...
def claim_id(i: int | None) -> str | None:
    """The id of the report claim at position ``i`` of ``ReportClaims.nodules`` (``C1`` for 0)."""
    return None if i is None else f"C{i + 1}"


def claim_index(cid: str | None) -> int | None:
    """The position in ``ReportClaims.nodules`` of the claim with id ``cid``."""
    return None if cid is None else int(cid[1:]) - 1


def _min(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None
