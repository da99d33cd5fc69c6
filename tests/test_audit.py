"""The batch case audit (issue 24): a real batch (three LIDC CTs with written reports, a corrupt
case, the demo CT without report), killed part-way and resumed; re-runs; the Dask backend; the
dashboard in headless Chromium.

One audit run is shared by the module (the ``audited`` fixture): it is the resumed run of the
crash test, so the batch is analysed once.  Analyses run without explanations (``explain=False``)
on 2 workers x 1 thread.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lungfuse.pipelines.audit import AuditConfig, AuditRun, ManifestError, available_formats, discover_cases, run_audit
from lungfuse.pipelines.audit.inputs import case_fingerprint, current_model_hashes
from lungfuse.pipelines.audit.summary import priority_score

REPORTS = {
    # LIDC-IDRI-0001: the 29-33 mm left upper lobe mass, correctly reported (concordant; F2/F3 score
    # below the missed-nodule threshold, flags only)
    "a-0001-correct": "FINDINGS: A 33 mm spiculated solid mass in the left upper lobe. No other pulmonary nodules.",
    # LIDC-IDRI-0002: its 24 mm left upper lobe nodule put in the right lung (side discordance)
    "b-0002-wrong-side": "FINDINGS: A 24 mm solid nodule in the right lower lobe. No other pulmonary nodules.",
    # LIDC-IDRI-0003 (test patient, evaluated only): one of its nodules reported, the others denied
    "c-0003-missed": "FINDINGS: A 28 mm solid mass in the left lower lobe. No other pulmonary nodules.",
}
SOURCES = {"a-0001-correct": "LIDC-IDRI-0001", "b-0002-wrong-side": "LIDC-IDRI-0002", "c-0003-missed": "LIDC-IDRI-0003"}
SETTINGS = {"explain": False}
#: the shared batch writes the JSON, the CSV and (where this build has it) the PDF; the DICOM exports
#: have their own tests (tests/test_export_dicom.py) and would only add time here
FORMATS = tuple(f for f in ("pdf", "json", "csv") if f in available_formats())


def _config(**kw: object) -> AuditConfig:
    base: dict[str, object] = {"workers": 2, "threads": 1, "device": "cpu", "settings": SETTINGS, "progress": False,
                               "formats": FORMATS}
    base.update(kw)
    return AuditConfig(**base)  # type: ignore[arg-type]


def _corrupt_case(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "1.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(600))  # a DICOM preamble, then garbage
    (d / "2.dcm").write_bytes(os.urandom(2048))
    (d / "report.txt").write_text("FINDINGS: A 5 mm nodule in the right upper lobe.\n")


def _demo_without_report(d: Path) -> None:
    from lungfuse.pipelines.demo.lidc_demo import make_lidc_demo_case

    case = make_lidc_demo_case(d)
    Path(case.report_path).unlink()


@pytest.fixture(scope="module")
def batch(lidc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit_batch")
    for cid, text in REPORTS.items():
        (root / cid / "ct").mkdir(parents=True)
        for f in sorted((lidc_root / SOURCES[cid] / "ct").iterdir()):  # the reader walks no folder links
            (root / cid / "ct" / f.name).symlink_to(f)
        (root / cid / "report.txt").write_text(text + "\n")
    _corrupt_case(root / "d-corrupt")
    _demo_without_report(root / "0-demo-no-report")  # first: the killed run of `audited` finishes it quickly
    return root


@dataclass
class Audited:
    batch: Path
    out: Path
    done_before_kill: set[str]
    rows_after_kill: list[dict[str, object]]
    resumed: AuditRun


def _ledger_rows(out: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(f"file:{out / 'ledger.sqlite'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM cases")]
    finally:
        db.close()


@pytest.fixture(scope="module")
def audited(batch: Path, tmp_path_factory: pytest.TempPathFactory) -> Audited:
    """``lungfuse audit`` in a subprocess, SIGKILLed once the first case is done; then resumed."""
    out = tmp_path_factory.mktemp("audit_out")
    cmd = [sys.executable, "-m", "lungfuse.app.cli", "audit", str(batch), "--out", str(out), "--workers", "1",
           "--threads", "2", "--device", "cpu", "--no-explain", "--quiet", "--formats", ",".join(FORMATS)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done: set[str] = set()
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "ledger.sqlite").exists():
                try:
                    done = {str(r["case_id"]) for r in _ledger_rows(out) if r["state"] == "done"}
                except sqlite3.OperationalError:  # the schema is being created
                    done = set()
                if done:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, f"the audit ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
        assert done, "no case finished within 240 s"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()
    rows_after_kill = _ledger_rows(out)
    time.sleep(0.5)  # the killed coordinator's worker gets SIGKILL too (PR_SET_PDEATHSIG)
    resumed = run_audit(batch, out, _config())
    return Audited(batch, out, done, rows_after_kill, resumed)


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# -- the batch -------------------------------------------------------------------------------------
def test_summary_ranks_the_batch(audited: Audited) -> None:
    rows = _summary(audited.out)
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    by = {r["case_id"]: r for r in rows}
    assert set(by) == {*REPORTS, "d-corrupt", "0-demo-no-report"}
    assert by["d-corrupt"]["state"] == "error" and by["d-corrupt"]["error_code"] == "ingest_error"
    assert "d-corrupt" in by["d-corrupt"]["error_message"]  # the message names the case's folder
    assert by["a-0001-correct"]["status"] == "concordant", by["a-0001-correct"]
    assert by["0-demo-no-report"]["status"] == "concordant" and by["0-demo-no-report"]["report_present"] == "0"
    assert by["b-0002-wrong-side"]["status"] == "discordant" and "side:discordance" in by["b-0002-wrong-side"]["reasons"]
    assert by["c-0003-missed"]["status"] == "discordant" and "missed_nodule:critical" in by["c-0003-missed"]["reasons"]
    rank = {cid: int(r["rank"]) for cid, r in by.items()}
    assert max(rank["b-0002-wrong-side"], rank["c-0003-missed"]) < min(rank["a-0001-correct"], rank["0-demo-no-report"])
    assert rank["c-0003-missed"] < rank["b-0002-wrong-side"]  # two critical missed nodules outrank one side error
    assert rank["d-corrupt"] == 5  # an error has no priority: listed last
    log = (audited.out / "audit.log").read_text().splitlines()
    assert any("d-corrupt error ingest_error" in x for x in log)


def test_killed_audit_resumes_without_duplicates_or_temp_files(audited: Audited) -> None:
    import jsonschema

    from lungfuse.pipelines.analysis.result import CaseResult, schema

    assert audited.done_before_kill and len(audited.rows_after_kill) < 5 + 1
    assert any(r["state"] in ("running", "pending") for r in audited.rows_after_kill), audited.rows_after_kill
    # the cases done before the kill were not analysed again
    assert not (audited.done_before_kill & set(audited.resumed.analysed))
    rows = _ledger_rows(audited.out)
    assert sorted(str(r["case_id"]) for r in rows) == sorted({*REPORTS, "d-corrupt", "0-demo-no-report"})
    assert {r["state"] for r in rows} <= {"done", "error"}
    assert not (audited.out / "cases" / ".staging").exists()
    leftovers = [p for p in audited.out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("old.")]
    assert not leftovers
    validator = jsonschema.Draft202012Validator(schema())
    hashes = current_model_hashes()
    for r in rows:
        d = audited.out / "cases" / str(r["case_id"])
        if r["state"] == "error":
            assert not d.exists()
            continue
        doc = json.loads((d / "result.json").read_text())
        validator.validate(doc)
        assert doc["provenance"]["input_fingerprint"] == r["input_fingerprint"]  # the cheap one is the real one
        res = CaseResult.load(d / "result.json")
        assert res.case_id == r["case_id"] and res.identifiers is not None
        assert Path(res.identifiers.ct_path or "").exists()  # the GUI finds the CT
        assert json.loads(str(r["model_hashes"])) == hashes
        if "pdf" in FORMATS:
            assert (d / "report.pdf").read_bytes()[:5] == b"%PDF-"
        with open(d / "findings.csv", newline="") as fh:
            assert len(list(csv.DictReader(fh))) == len(res.findings)
        assert sorted(json.loads(str(r["outputs"]))) == sorted(p.name for p in d.iterdir())


# -- Dask --------------------------------------------------------------------------------------------
def test_dask_cluster_gives_the_same_summary(audited: Audited, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    small = tmp_path / "batch"
    small.mkdir()
    for cid in ("d-corrupt", "0-demo-no-report"):
        shutil.copytree(audited.batch / cid, small / cid)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        # by its address, as `lungfuse audit --dask tcp://...` connects
        run = run_audit(small, tmp_path / "out", _config(formats=("json",), dask=cluster.scheduler_address))
    assert sorted(run.analysed) == ["0-demo-no-report", "d-corrupt"]
    pool = {r["case_id"]: r for r in _summary(audited.out)}
    dask = _summary(tmp_path / "out")
    assert [r["case_id"] for r in dask] == ["0-demo-no-report", "d-corrupt"]
    for r in dask:
        p = pool[r["case_id"]]
        for k in ("state", "status", "priority", "reasons", "n_findings", "top_finding", "error_code", "input_fingerprint"):
            assert r[k] == p[k], (r["case_id"], k)


# -- the dashboard ----------------------------------------------------------------------------------
def test_dashboard_in_headless_chromium(audited: Audited, tmp_path: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("chromium not installed (make apt installs it): the dashboard is not rendered")
    page = audited.out / "summary.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    ranked = [r["case_id"] for r in _summary(audited.out)]
    pos = [dom.index(f'data-case="{cid}"') for cid in ranked]
    assert pos == sorted(pos)  # rows in rank order
    for cid in ranked:
        if cid != "d-corrupt":
            assert f'href="cases/{cid}/result.json"' in dom
            assert ("pdf" not in FORMATS) or f'href="cases/{cid}/report.pdf"' in dom
    assert dom.count('src="data:image/png;base64,') >= 3  # thumbnails inline
    assert 'data-ready="1"' in dom and 'id="shown">5<' in dom  # the filter script ran: every row shown


# -- re-runs (last: changes the shared batch) -------------------------------------------------------
def test_rerun_skips_and_a_changed_report_redoes_only_that_case(audited: Audited) -> None:
    again = run_audit(audited.batch, audited.out, _config())
    assert again.analysed == [] and len(again.skipped) == 5
    before = {str(r["case_id"]): r for r in _ledger_rows(audited.out)}
    # the demo gets a report (the last test of the shared batch: it changes the batch for good)
    (audited.batch / "0-demo-no-report" / "report.txt").write_text("FINDINGS: No pulmonary nodules.\n")
    third = run_audit(audited.batch, audited.out, _config(workers=1))
    assert third.analysed == ["0-demo-no-report"]
    after = {str(r["case_id"]): r for r in _ledger_rows(audited.out)}
    assert after["0-demo-no-report"]["input_fingerprint"] != before["0-demo-no-report"]["input_fingerprint"]
    assert json.loads((audited.out / "cases" / "0-demo-no-report" / "result.json").read_text())["report_present"]
    for cid in (*REPORTS, "d-corrupt"):
        assert after[cid]["finished_utc"] == before[cid]["finished_utc"]



# -- small parts ------------------------------------------------------------------------------------
def test_manifest_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "ct").mkdir()
    m = tmp_path / "m.csv"
    m.write_text("case_id,ct_path,report_path\nc1,ct,\nc2,/abs/ct,r.txt\n")
    cases = discover_cases(m)
    assert [(c.case_id, c.ct_path, c.report_path) for c in cases] == [
        ("c1", tmp_path / "ct", None), ("c2", Path("/abs/ct"), tmp_path / "r.txt")]
    for body, line in (("case_id,ct,report\n", "line 1"), ("case_id,ct_path,report_path\nc1,ct\n", "line 2"),
                       ("case_id,ct_path,report_path\nc1,ct,\nc1,ct,\n", "line 3"),
                       ("case_id,ct_path,report_path\n../x,ct,\n", "line 2")):
        m.write_text(body)
        with pytest.raises(ManifestError, match=line):
            discover_cases(m)
    with pytest.raises(FileNotFoundError):
        discover_cases(tmp_path / "absent")


def test_case_folders_and_their_reports(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    for name in ("md", "sr", "none", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "md" / "report.md").write_text("FINDINGS: none.\n")
    (tmp_path / "none" / "notes.txt").write_text("not a report name\n")
    (tmp_path / "report.txt").write_text("the batch folder's own file: no case's report\n")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.save_as(tmp_path / "sr" / "sr_report.dcm", enforce_file_format=True)
    cases = {c.case_id: c for c in discover_cases(tmp_path)}
    assert set(cases) == {"md", "sr", "none"}
    assert cases["md"].report_path == tmp_path / "md" / "report.md"
    assert cases["sr"].report_path == tmp_path / "sr" / "sr_report.dcm"
    assert cases["none"].report_path is None and cases["none"].ct_path == tmp_path / "none"


def test_fingerprint_of_a_bad_case_follows_its_files(tmp_path: Path) -> None:
    _corrupt_case(tmp_path / "x")
    (c,) = discover_cases(tmp_path)
    fp = case_fingerprint(c)
    assert fp.startswith("files:") and case_fingerprint(c) == fp
    (tmp_path / "x" / "report.txt").write_text("FINDINGS: none.\n")
    assert case_fingerprint(c) != fp


def test_priority_score_orders_the_reasons() -> None:
    findings = {"F1": {"diameter_mm": 15.0, "malignancy_probability": 0.9}}
    missed = priority_score("discordant", [{"code": "missed_nodule", "severity": "critical", "concerns": ["F1"]}],
                            {"findings": findings})
    assert missed == 80 + 10 + 18
    side = priority_score("discordant", [{"code": "side", "severity": "discordance", "concerns": ["C1", "F1"]}], {})
    benign = priority_score("discordant", [{"code": "benign_wording", "severity": "discordance", "concerns": ["F1"]}],
                            {"findings": findings})
    flagged = priority_score("concordant", [], {"n_unmentioned": 5})
    assert missed > benign > side > flagged > priority_score("concordant", [], {}) == 0


def test_cli_refuses_an_unknown_format_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lungfuse.app.cli.main import main

    assert main(["audit", str(tmp_path), "--out", str(tmp_path / "o"), "--formats", "json,tiff"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tiff" in err
    assert main(["audit", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert "absent" in capsys.readouterr().err


def test_manifest_batch_with_a_missing_report_and_a_timeout(batch: Path, tmp_path: Path) -> None:
    ct = batch / "0-demo-no-report" / "ct"
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case_id,ct_path,report_path\nr-missing-report,{ct},absent.txt\nt-slow,{ct},\n")
    run = run_audit(manifest, tmp_path / "out", _config(workers=1, timeout_s=3.0, formats=("json",)))
    by = {str(r["case_id"]): r for r in run.rows}
    assert by["r-missing-report"]["error_code"] == "report_error"
    assert "absent.txt" in str(by["r-missing-report"]["error_message"])
    assert by["t-slow"]["state"] == "error" and by["t-slow"]["error_code"] == "timeout", by["t-slow"]
    assert not (tmp_path / "out" / "cases" / "t-slow").exists()
    assert len(_summary(tmp_path / "out")) == 2


def test_a_dying_worker_makes_its_case_an_error_and_the_batch_goes_on(batch: Path, tmp_path: Path) -> None:
    import threading

    small = tmp_path / "batch"
    shutil.copytree(batch / "0-demo-no-report", small / "a-demo")
    _corrupt_case(small / "b-corrupt")
    out = tmp_path / "out"
    box: dict[str, AuditRun] = {}
    # two workers: b-corrupt goes on in the other one while a-demo's worker is killed
    th = threading.Thread(target=lambda: box.update(run=run_audit(small, out, _config(workers=2, formats=("json",)))))
    th.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and th.is_alive():
        rows = _ledger_rows(out) if (out / "ledger.sqlite").exists() else []
        running = [r for r in rows if r["case_id"] == "a-demo" and r["state"] == "running"]
        if running:
            killed = int(str(running[0]["worker"]).rsplit(":", 1)[1])
            os.kill(killed, signal.SIGKILL)  # the worker process analysing a-demo
        time.sleep(0.1)
    th.join(180)
    assert killed is not None and "run" in box
    by = {str(r["case_id"]): r for r in box["run"].rows}
    assert by["a-demo"]["state"] == "error" and by["a-demo"]["error_code"] == "worker_died"
    assert "signal 9" in str(by["a-demo"]["error_message"])
    assert by["b-corrupt"]["error_code"] == "ingest_error"
    assert not (out / "cases" / ".staging").exists()


def test_a_case_left_running_too_often_is_given_up(tmp_path: Path) -> None:
    from lungfuse.pipelines.audit.ledger import Ledger

    _corrupt_case(tmp_path / "in" / "x")
    (case,) = discover_cases(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    with Ledger(out / "ledger.sqlite") as led:  # as a coordinator killed three times during this case leaves it
        led.upsert("x", state="running", attempts=3, input_fingerprint=case_fingerprint(case),
                   model_hashes=current_model_hashes())
    run = run_audit(tmp_path / "in", out, _config(max_attempts=3))
    assert run.analysed == [] and run.rows[0]["state"] == "error" and run.rows[0]["error_code"] == "interrupted"


def test_a_second_audit_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    import fcntl

    from lungfuse.pipelines.audit import AuditError

    _corrupt_case(tmp_path / "in" / "x")
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".audit.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running audit holds it
        with pytest.raises(AuditError, match="another lungfuse audit"):
            run_audit(tmp_path / "in", tmp_path / "out", _config())
