"""CaseResult 2.0 as a contract, on the demo case (no LIDC data): save/load round trip, the shipped
JSON Schema, ids and tracking UIDs, coded reasons and flags, masks, the review sidecar, schema 1.0
files, de-identification, cancellation and the model registry."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from lungfuse.pipelines.analysis.analyze import analyze_case
from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
from lungfuse.pipelines.analysis.codes import ReasonCode, Severity
from lungfuse.pipelines.analysis.result import (
    SCHEMA_VERSION,
    CaseResult,
    Claim,
    ClaimMatch,
    Finding,
    Flag,
    Reason,
    input_fingerprint,
    schema,
)
from lungfuse.pipelines.analysis.review import FindingReview, ReaderFinding, Review, review_path
from lungfuse.pipelines.core.errors import AnalysisCancelled, ConfigurationError, LungFuseError
from lungfuse.pipelines.inference.registry import ImageCache, ModelRegistry

DATA = Path(__file__).parent / "data"
SETTINGS = AnalysisSettings(device="cpu")
FAST = AnalysisSettings(device="cpu", explain=False)
#: a mass the demo does not have: discordant (size, calcification or no match)
WRONG = "FINDINGS: A 60 mm calcified mass in the left lower lobe.\nIMPRESSION: Mass."
NEGATIVE = "FINDINGS: No pulmonary nodules.\nIMPRESSION: No pulmonary nodules."


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lungfuse.pipelines.demo.case import make_demo_case

    return make_demo_case(tmp_path_factory.mktemp("demo"), seed=0).out_dir


@pytest.fixture(scope="module")
def result(demo: Path, registry: ModelRegistry) -> CaseResult:
    return analyze_case(Case(demo), SETTINGS, models=registry)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


def _validate(v: jsonschema.Draft202012Validator, d: dict) -> None:
    errors = sorted(v.iter_errors(d), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:10])


# ------------------------------------------------------------------------------------------------
# Round trip and schema
# ------------------------------------------------------------------------------------------------


def test_saved_demo_result_validates_and_round_trips(result: CaseResult, validator: jsonschema.Draft202012Validator,
                                                     tmp_path: Path) -> None:
    p = result.save(tmp_path / "case.json")
    d = json.loads(p.read_text())
    assert d["schema_version"] == SCHEMA_VERSION == "2.0"
    _validate(validator, d)
    back = CaseResult.load(p)
    assert back.to_dict() == result.to_dict()
    # typed, not dicts
    assert back.findings and all(isinstance(f, Finding) for f in back.findings)
    assert back.claims is not None and all(isinstance(c, Claim) for c in back.claims.nodules)
    assert back.matches and all(isinstance(m, ClaimMatch) for m in back.matches)
    assert all(isinstance(f, Flag) for f in back.flags) and all(isinstance(r, Reason) for r in back.reasons)
    assert set(back.arrays) == set(result.arrays)
    for k, a in result.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], a)
    # saved again, the file is the same
    p2 = back.save(tmp_path / "again.json")
    d2 = json.loads(p2.read_text())
    d.pop("arrays_file"), d2.pop("arrays_file")
    assert d == d2


def test_schema_package_data_and_codes() -> None:
    from importlib.resources import files

    from lungfuse.pipelines.analysis import result as result_module
    from lungfuse.pipelines.imaging import measure

    assert result_module.TEXTURES == measure.TEXTURES

    assert files("lungfuse.pipelines.analysis").joinpath("case_result.schema.json").is_file()
    s = schema()
    assert s["$defs"]["reason"]["properties"]["code"]["enum"] == [c.value for c in ReasonCode]
    assert s["$defs"]["reason"]["properties"]["severity"]["enum"] == [c.value for c in Severity]
    for code in ("missed_nodule", "claim_not_found", "size", "side", "lobe", "texture", "calcification",
                 "negative_report_with_finding"):
        assert ReasonCode(code)


def test_provenance_and_identifiers(result: CaseResult) -> None:
    from lungfuse.pipelines.io.dicom import load_ct

    p = result.provenance
    assert p.analysis_uid and p.created_utc and p.created_utc.endswith("Z") and p.lungfuse_version
    vol = load_ct(result.identifiers.ct_path)
    assert p.source_sop_instance_uids == list(vol.sop_instance_uids) and len(p.source_sop_instance_uids) == vol.shape[0]
    assert p.input_fingerprint == input_fingerprint(vol.series_instance_uid, vol.sop_instance_uids, result.report_text)
    assert p.input_fingerprint != input_fingerprint(vol.series_instance_uid, vol.sop_instance_uids, "another report")
    ids = result.identifiers
    assert ids.series_instance_uid == vol.series_instance_uid and ids.patient_id == vol.patient_id
    assert ids.study_instance_uid == vol.study_instance_uid
    assert not {"patient_id", "study_instance_uid", "series_instance_uid", "path"} & set(result.volume)
    for name in ("detector", "fusion", "text_encoder"):
        assert len(result.models[name]["sha256"]) == 64


def test_deidentified_export(result: CaseResult, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    d = result.to_dict(deidentify=True)
    _validate(validator, d)
    assert d["identifiers"] is None and d["provenance"]["source_sop_instance_uids"] == [] and d["deidentified"]
    text = json.dumps({k: v for k, v in d.items() if k != "report_text"})
    for secret in (result.identifiers.patient_id, result.identifiers.study_instance_uid,
                   result.identifiers.series_instance_uid, result.identifiers.ct_path,
                   *result.provenance.source_sop_instance_uids[:3]):
        assert secret and secret not in text
    assert d["case_id"].startswith("case-") and d["case_id"] != result.case_id
    back = CaseResult.load(result.save(tmp_path / "deid.json", deidentify=True))
    assert back.identifiers is None and back.to_dict() == d
    assert back.to_dict(deidentify=True) == d  # de-identifying twice changes nothing


# ------------------------------------------------------------------------------------------------
# Ids, tracking UIDs, coded reasons
# ------------------------------------------------------------------------------------------------


def test_ids_refer_to_each_other(result: CaseResult) -> None:
    assert [f.id for f in result.findings] == [f"F{i + 1}" for i in range(len(result.findings))]
    assert [c.id for c in result.claims.nodules] == [f"C{i + 1}" for i in range(len(result.claims.nodules))]
    uids = [f.tracking_uid for f in result.findings]
    assert len(set(uids)) == len(uids) and all(len(u) <= 64 for u in uids)
    for m in result.matches:
        c = result.claim(m.claim_id)
        assert not c.nodule.negated
        if m.finding_id is not None:
            assert result.finding(m.finding_id).claim_id == m.claim_id
    assert result.eaf["finding_id"] in {f.id for f in result.findings}
    for e in result.consistency_trajectory:
        for pair in e.get("pairs", []):
            assert pair["claim_id"] in {c.id for c in result.claims.nodules}


def test_ids_and_tracking_uids_stable(result: CaseResult, demo: Path, registry: ModelRegistry, tmp_path: Path) -> None:
    back = CaseResult.load(result.save(tmp_path / "case.json"))
    assert [(f.id, f.tracking_uid) for f in back.findings] == [(f.id, f.tracking_uid) for f in result.findings]
    # another analysis of the same CT (another report): a finding at the same place keeps its UID
    again = analyze_case(Case(demo, report=NEGATIVE), FAST, models=registry)
    assert again.provenance.analysis_uid != result.provenance.analysis_uid
    before = {tuple(np.round(f.center_lps_mm, 1)): f.tracking_uid for f in result.findings}
    after = {tuple(np.round(f.center_lps_mm, 1)): f.tracking_uid for f in again.findings}
    shared = set(before) & set(after)
    assert shared and all(before[k] == after[k] for k in shared)


def _missed_rule(r: CaseResult) -> tuple[float, float]:
    """The missed-nodule rule's score threshold (never below the operating one) and size floor."""
    op = r.models["detector"]["operating_threshold"]
    rules = r.models["rules"]
    return max(rules["missed_nodule_threshold"] or op, op), rules["missed_nodule_min_diameter_mm"]


def _undescribed(r: CaseResult) -> list[Finding]:
    """The detector findings of at least the rule's size that no claim describes."""
    described = {m.finding_id for m in r.matches}
    _, dmin = _missed_rule(r)
    return [f for f in r.findings if f.id not in described and f.source == "detector" and f.diameter_mm >= dmin]


def test_flags_carry_codes(result: CaseResult) -> None:
    # every >= 6 mm finding the report does not describe is named exactly once: a missed-nodule
    # reason at or above the rule's threshold, an unmentioned-finding flag below it
    thr, _ = _missed_rule(result)
    codes = (ReasonCode.UNMENTIONED_FINDING, ReasonCode.MISSED_NODULE)
    for f in _undescribed(result):
        named = [x for x in [*result.reasons, *result.flags] if x.code in codes and f.id in x.concerns]
        assert len(named) == 1, (f.id, named)
        (x,) = named
        if f.detection_score >= thr:
            assert x in result.reasons and x.code == ReasonCode.MISSED_NODULE
            assert x.severity in (Severity.DISCORDANCE, Severity.CRITICAL)
        else:
            assert x in result.flags and x.severity == Severity.WARNING
            assert str(x).startswith(f"unmentioned_finding: finding {f.id} ")
    undescribed = {f.id for f in _undescribed(result)}
    assert all(set(x.concerns) <= undescribed for x in [*result.reasons, *result.flags] if x.code in codes)


def test_negative_report_reasons_carry_codes(demo: Path, registry: ModelRegistry) -> None:
    r = analyze_case(Case(demo, report=NEGATIVE), FAST, models=registry)
    assert r.status == "discordant"
    thr, _ = _missed_rule(r)
    assert r.reasons and all(x.code == ReasonCode.NEGATIVE_REPORT_WITH_FINDING for x in r.reasons)
    # "No pulmonary nodules" is an explicit denial: each confident finding is critical
    assert all(x.severity == Severity.CRITICAL and len(x.concerns) == 1 for x in r.reasons)
    assert {x.concerns[0] for x in r.reasons} == {f.id for f in _undescribed(r) if f.detection_score >= thr}
    assert any(x.code == ReasonCode.IMAGE_CACHE for x in r.flags)  # the CT was analysed before in this module


def test_wrong_report_reasons_carry_codes(demo: Path, registry: ModelRegistry,
                                          validator: jsonschema.Draft202012Validator) -> None:
    r = analyze_case(Case(demo, report=WRONG), FAST, models=registry)
    _validate(validator, r.to_dict())
    assert r.status == "discordant"
    about_claim = [x for x in r.reasons if x.code not in (ReasonCode.MISSED_NODULE, ReasonCode.NEGATIVE_REPORT_WITH_FINDING)]
    codes = {x.code for x in about_claim}
    assert codes & {ReasonCode.SIZE, ReasonCode.CALCIFICATION, ReasonCode.CLAIM_NOT_FOUND}, [str(x) for x in r.reasons]
    for x in about_claim:
        assert x.concerns[0] == "C1" and x.severity == Severity.DISCORDANCE
        assert str(x).startswith("'")  # "'<claim text>': <discordance>", as shown before codes existed
    # the findings the wrong claim does not describe are weighed too (the mass it under-describes)
    assert all(x.concerns[0].startswith("F") for x in r.reasons if x not in about_claim)


# ------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------


def test_masks_and_affines_in_the_npz(result: CaseResult, tmp_path: Path) -> None:
    p = result.save(tmp_path / "case.json")
    arrays = CaseResult.load_arrays(p)
    d = json.loads(p.read_text())
    assert d["findings"]
    for f in d["findings"]:
        m = f["mask"]
        mask = arrays[m["array"]]
        assert mask.dtype == bool and mask.any() and list(mask.shape) == m["shape"]
        aff = np.asarray(m["affine_lps"])
        # the finding's centre (LPS mm) maps into the mask's voxels, onto a voxel of the mask
        vox = np.linalg.solve(aff[:3, :3], np.asarray(f["center_lps_mm"]) - aff[:3, 3])
        idx = tuple(int(v) for v in np.rint(vox))
        assert all(0 <= i < n for i, n in zip(idx, mask.shape, strict=True)), (f["id"], vox, mask.shape)
        assert mask[idx], f["id"]
        # the mask's volume is the measured one (segmented findings)
        if f["measurement"]["source"] == "segmentation":
            assert int(mask.sum()) == f["measurement"]["n_voxels"]


# ------------------------------------------------------------------------------------------------
# Review sidecar
# ------------------------------------------------------------------------------------------------


def test_review_sidecar_merges_and_survives_reanalysis(result: CaseResult, demo: Path, registry: ModelRegistry,
                                                       tmp_path: Path) -> None:
    p = result.save(tmp_path / "case.json")
    f1 = result.findings[0]
    review = Review("Dr. Reader", analysis_uid=result.provenance.analysis_uid,
                    findings=[FindingReview(f1.id, f1.tracking_uid, "accepted", "4B", "agree")],
                    added_findings=[ReaderFinding("R1", [10.0, 20.0, -100.0], 5.0, "2", "missed by the machine")])
    side = review.save(review_path(p))
    assert side == tmp_path / "case.review.json"
    loaded = CaseResult.load(p)
    assert loaded.review is not None and loaded.review.reviewer == "Dr. Reader" and loaded.review.reviewed_utc
    assert loaded.review.for_finding(loaded.findings[0]).decision == "accepted"
    assert "review" not in loaded.to_dict()  # machine output stays apart
    assert not loaded.review.stale(loaded.provenance.analysis_uid)
    # re-analysis saved over the result: the sidecar is untouched and still merges
    before = side.read_bytes()
    again = analyze_case(Case(demo), FAST, models=registry)
    again.save(p)
    assert side.read_bytes() == before
    merged = CaseResult.load(p)
    assert merged.review is not None and merged.review.stale(merged.provenance.analysis_uid)
    same = next(f for f in merged.findings if f.tracking_uid == f1.tracking_uid)
    assert merged.review.for_finding(same).category == "4B"
    assert merged.review.added_findings[0].id == "R1"


def test_review_validates() -> None:
    with pytest.raises(ValueError, match="decision"):
        FindingReview("F1", decision="maybe")
    with pytest.raises(ValueError, match="category"):
        FindingReview("F1", category="5")
    with pytest.raises(ValueError, match="reviewer"):
        Review(" ")
    with pytest.raises(ValueError, match="ReaderFinding.id"):
        ReaderFinding("F1", [0.0, 0.0, 0.0])


# ------------------------------------------------------------------------------------------------
# Schema 1.0 files
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["case_result_v1.json", "case_result_v1_discordant.json"])
def test_v1_file_loads(name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    """Files written by schema 1.0 (the demo case analysed by the code before 2.0)."""
    v1 = json.loads((DATA / name).read_text())
    assert v1["schema_version"] == "1.0"
    r = CaseResult.from_dict(v1)
    assert [f.id for f in r.findings] == [f"F{f['index'] + 1}" for f in v1["findings"]]
    for f, old in zip(r.findings, v1["findings"], strict=True):
        assert f.claim_id == (None if old["claim_index"] is None else f"C{old['claim_index'] + 1}")
        assert f.detection_score == old["detection_score"] and f.center_lps_mm == old["center_lps_mm"]
    assert [m.claim_id for m in r.matches] == [f"C{m['claim_index'] + 1}" for m in v1["matches"]]
    assert [str(x) for x in r.reasons] == v1["reasons"] and [str(x) for x in r.flags] == v1["flags"]
    assert r.status == v1["status"] and r.identifiers.series_instance_uid == v1["volume"]["series_instance_uid"]
    _validate(validator, r.to_dict())
    # loading twice gives the same tracking UIDs; a 2.0 save of it round-trips
    assert [f.tracking_uid for f in CaseResult.from_dict(v1).findings] == [f.tracking_uid for f in r.findings]
    p = tmp_path / "v1.json"
    p.write_text(json.dumps(v1))
    assert CaseResult.load(r.save(tmp_path / "v2.json")).to_dict() == CaseResult.load(p).to_dict()
    if v1["reasons"]:
        assert all(x.code in ReasonCode and x.severity == Severity.DISCORDANCE for x in r.reasons)


def test_unknown_schema_version_is_refused() -> None:
    with pytest.raises(ValueError, match="schema_version"):
        CaseResult.from_dict({"schema_version": "9.9"})


# ------------------------------------------------------------------------------------------------
# Validation at construction
# ------------------------------------------------------------------------------------------------


def test_domain_objects_validate(result: CaseResult) -> None:
    d = result.findings[0].to_dict()
    with pytest.raises(ValueError, match="Finding.id"):
        Finding.from_dict({**d, "id": "finding0"})
    with pytest.raises(ValueError, match="Finding.tracking_uid"):
        Finding.from_dict({**d, "tracking_uid": "not-a-uid"})
    with pytest.raises(ValueError, match="Finding.texture"):
        Finding.from_dict({**d, "texture": "fluffy"})
    with pytest.raises(ValueError, match="Reason.code"):
        Reason("because", "a sentence")
    with pytest.raises(ValueError, match="Flag.concerns"):
        Flag(ReasonCode.NO_LUNGS, "no_lungs: ...", concerns=("finding 3",))
    with pytest.raises(ValueError, match="ClaimMatch.resolved_by"):
        ClaimMatch("C1", "F1", "somehow")
    bad = result.to_dict()
    bad["matches"][0]["finding_id"] = "F99"
    with pytest.raises(ValueError, match="matches"):
        CaseResult.from_dict(bad)
    bad = result.to_dict()
    bad["flags"] = [Flag(ReasonCode.NO_LUNGS, "no_lungs: ...").to_dict() | {"concerns": ["F99"]}]
    with pytest.raises(ValueError, match="flags"):
        CaseResult.from_dict(bad)


def test_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="device"):
        AnalysisSettings(device="tpu")
    with pytest.raises(ConfigurationError, match="max_findings"):
        AnalysisSettings(max_findings=0)
    assert issubclass(AnalysisCancelled, LungFuseError)


# ------------------------------------------------------------------------------------------------
# Cancellation
# ------------------------------------------------------------------------------------------------


def test_cancel_between_stages_writes_nothing(demo: Path, registry: ModelRegistry, tmp_path: Path) -> None:
    stages: list[str] = []
    out = tmp_path / "out" / "case.json"

    def run() -> None:
        r = analyze_case(Case(demo), FAST, progress=lambda s, i, n: stages.append(s), models=registry,
                         cancel=lambda: len(stages) >= 3)
        r.save(out)  # never reached

    with pytest.raises(AnalysisCancelled):
        run()
    assert stages == ["load", "preprocess", "localise"]
    assert not out.exists() and not out.parent.exists()


def test_cancel_inside_sliding_window_detection(demo: Path, registry: ModelRegistry) -> None:
    """With the image cache off the detector runs; cancel turns true once it asked a few times."""
    calls = {"n": 0, "in_detect": 0}
    import traceback

    def cancel() -> bool:
        calls["n"] += 1
        if any(fr.name == "forward" and "detector" in fr.filename for fr in traceback.extract_stack()):
            calls["in_detect"] += 1
            return calls["in_detect"] >= 2
        return False

    with pytest.raises(AnalysisCancelled, match="during detection"):
        analyze_case(Case(demo), AnalysisSettings(device="cpu", explain=False, cache_image=False), models=registry,
                     cancel=cancel)
    assert calls["in_detect"] == 2


def test_detect_without_cancel_unchanged(registry: ModelRegistry) -> None:
    from lungfuse.pipelines.inference.detector import detect

    rng = np.random.default_rng(0)
    arr = rng.normal(-700, 200, (40, 48, 48)).astype(np.float32)
    det = registry.get(None, "cpu").detector
    a = detect(det, arr, threshold=0.01)
    b = detect(det, arr, threshold=0.01, cancel=lambda: False)
    assert list(a) == list(b)
    np.testing.assert_array_equal(a.prob_map, b.prob_map)


def test_atomic_save_keeps_the_old_file_on_failure(result: CaseResult, tmp_path: Path) -> None:
    p = result.save(tmp_path / "case.json")
    old = p.read_bytes()
    broken = CaseResult.from_dict(result.to_dict())
    broken.settings = {"not json": object()}
    with pytest.raises(TypeError):
        broken.save(p)
    assert p.read_bytes() == old
    assert sorted(x.name for x in tmp_path.iterdir()) == ["case.json", "case.npz"]  # no temporary files left


# ------------------------------------------------------------------------------------------------
# The model registry
# ------------------------------------------------------------------------------------------------


def test_no_model_module_globals() -> None:
    import lungfuse.pipelines.inference.registry as reg

    for name in ("lungfuse.pipelines.analysis.analyze", "lungfuse.pipelines.analysis.pipeline",
                 "lungfuse.pipelines.analysis.fusing", "lungfuse.pipelines.inference.registry"):
        mod = importlib.import_module(name)
        for attr in ("_MODEL_CACHE", "_MODEL_LOCK", "_IMAGE_CACHE", "load_models"):
            assert not hasattr(mod, attr), f"{name}.{attr}"
        for attr, value in vars(mod).items():
            assert not isinstance(value, reg.LoadedModels | reg.ModelRegistry | ImageCache), f"{name}.{attr}"
    a, b = ModelRegistry(), ModelRegistry()
    assert a.image_cache is not b.image_cache and a.loaded() == [] == b.loaded()


def test_registry_loads_once_per_folder_and_device(registry: ModelRegistry) -> None:
    m = registry.get(None, "cpu")
    assert registry.get(None, "cpu") is m
    assert m.detector is not None and m.fusion is not None and m.consistency is not None
    tok, bert = m.text_encoder()
    assert tok is not None and bert is not None
    assert len(registry.loaded()) == 1


def test_the_registry_holds_its_own_text_encoder(registry: ModelRegistry) -> None:
    """The report encoder an analysis uses is the registry's, not the lab's module-level cache."""
    from lungfuse.models.text import load_text_backbone

    m = registry.get(None, "cpu")
    assert m.text_encoder() is m.text_encoder()
    cached = load_text_backbone.cache_info().currsize
    other = ModelRegistry().get(None, "cpu")
    assert other.text_encoder()[1] is not m.text_encoder()[1]
    assert load_text_backbone.cache_info().currsize == cached


def test_image_cache_evicts_the_oldest() -> None:
    c = ImageCache(2)
    for k in "abc":
        c.put(k, k.upper())
    assert c.get("a") is None and c.get("b") == "B" and c.get("c") == "C" and len(c) == 2
