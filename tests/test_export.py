"""Exports (issue 23): all-or-nothing writing, export_case with JSON and CSV of a saved result (no analysis run)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from lungfuse.pipelines.analysis.result import CaseResult
from lungfuse.pipelines.analysis.review import FindingReview, Review
from lungfuse.pipelines.export import FORMATS, export_case, parse_formats
from lungfuse.pipelines.export.api import WRITERS
from lungfuse.pipelines.export.source import ExportError
from lungfuse.pipelines.export.uids import export_uid, pseudonym, remap_uid
from lungfuse.pipelines.export.writing import StagedWrite


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), StagedWrite(tmp_path) as w:
        w.write_bytes("a.json", b"{}")
        raise RuntimeError("fails mid-export")
    assert list(tmp_path.iterdir()) == []


def test_clean_export_renames_into_place(tmp_path: Path) -> None:
    with StagedWrite(tmp_path) as w:
        w.write_bytes("a.json", b"{}")
        assert not (tmp_path / "a.json").exists()  # staged, not yet in place
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# ------------------------------------------------------------------------------------------------
# export_case with the formats that need no CT (json, csv), on a saved result (no analysis run)
# ------------------------------------------------------------------------------------------------

DATA = Path(__file__).parent / "data"


def _saved_result() -> CaseResult:
    return CaseResult.load(DATA / "case_result_v1.json", arrays=False)


def test_parse_formats() -> None:
    assert parse_formats(None) == FORMATS
    assert parse_formats("csv, JSON") == ("json", "csv")  # FORMATS order, case-insensitive
    with pytest.raises(ValueError, match="xml"):
        parse_formats("json,xml")
    with pytest.raises(ValueError):
        parse_formats("")


def test_json_and_csv_export_with_review(tmp_path: Path) -> None:
    r = _saved_result()
    f1 = r.findings[0]
    r.review = Review(reviewer="Dr Reader", findings=[FindingReview(f1.id, f1.tracking_uid, "rejected", None, "vessel")])
    e = export_case(r, tmp_path, "json,csv")
    assert sorted(p.name for p in e.all_files) == ["findings.csv", "result.json", "result.review.json"]
    back = CaseResult.load(tmp_path / "result.json", arrays=False)  # the sidecar merges back in
    assert back.review is not None and back.review.for_finding(f1) is not None
    assert back.review.for_finding(f1).decision == "rejected"  # type: ignore[union-attr]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "findings.csv").read_text())))
    assert len(rows) == len(r.findings) and rows[0]["review_decision"] == "rejected"
    assert rows[0]["review_comment"] == "vessel" and rows[0]["case_id"] == r.case_id
    assert set(e.timings_s) == {"json", "csv"}


def test_deidentified_json_and_csv_share_one_pseudonym(tmp_path: Path) -> None:
    r = _saved_result()
    r.review = Review(reviewer="Dr Reader")
    assert r.identifiers is not None
    study = r.identifiers.study_instance_uid
    export_case(r, tmp_path / "a", "json,csv", deidentify=True)
    export_case(r, tmp_path / "b", "json,csv", deidentify=True)
    label = pseudonym(study)
    for sub in ("a", "b"):  # the same pseudonym in both formats and in a re-export
        d = json.loads((tmp_path / sub / "result.json").read_text())
        assert d["case_id"] == label and d["identifiers"] is None and d["deidentified"] is True
        rows = list(csv.DictReader(io.StringIO((tmp_path / sub / "findings.csv").read_text())))
        assert {row["case_id"] for row in rows} == {label}
        blob = b"".join(p.read_bytes() for p in (tmp_path / sub).iterdir())
        for secret in (r.case_id, study, r.identifiers.series_instance_uid, "Dr Reader"):
            assert secret.encode() not in blob, secret


def test_a_failing_format_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: object) -> list[tuple[str, bytes]]:
        raise RuntimeError("disk full")

    monkeypatch.setitem(WRITERS, "csv", broken)
    with pytest.raises(ExportError, match="csv export .* failed: RuntimeError: disk full"):
        export_case(_saved_result(), tmp_path, "json,csv")
    assert list(tmp_path.iterdir()) == []  # the JSON staged before the failure is gone too


def test_export_uids_are_deterministic() -> None:
    a = export_uid("1.2.3", "sr")
    assert a == export_uid("1.2.3", "sr") and a != export_uid("1.2.3", "seg") and a != export_uid("1.2.4", "sr")
    assert remap_uid("1.2.3") == remap_uid("1.2.3") != "1.2.3"
    with pytest.raises(ValueError):
        export_uid(None, "sr")


def test_exported_files_get_the_umask_mode(tmp_path: Path) -> None:
    from lungfuse.pipelines.export import writing

    with StagedWrite(tmp_path) as w:
        w.write_bytes("a.json", b"{}")
    # the mode a plain new file gets (0644 under the usual umask 022), not mkstemp's 0600
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~writing._UMASK


def test_every_reason_code_has_plain_words_in_the_pdf() -> None:
    from lungfuse.pipelines.analysis.codes import ReasonCode
    from lungfuse.pipelines.export.pdf import REASON_LABELS

    assert {c.value for c in ReasonCode} <= set(REASON_LABELS), "a new reason code needs its PDF label"
