"""The work on one case, as a worker runs it: analyse, export, save, summarise.

Research software, NOT for diagnostic use.

:func:`run_job` is the same for the local process pool (:func:`worker_main`, one process per
worker, models loaded once when it starts) and a Dask cluster (:mod:`.dask_backend`: a worker
plugin loads them once per Dask worker).  It never raises for a bad case: every failure comes back as an
:class:`Outcome` with an error code (:data:`~.ledger.ERROR_CODES`) and the message.  It writes only
into the job's private staging folder; the coordinator moves that folder into place and records
the ledger row, so a worker never touches the ledger nor a case's published outputs.
"""

from __future__ import annotations

import os
import resource
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lungfuse.pipelines.audit.thumbs import THUMB_NAME, thumbnail_png, top_finding

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from lungfuse.pipelines.analysis.result import CaseResult
    from lungfuse.pipelines.inference.registry import ModelRegistry

__all__ = ["Job", "Outcome", "run_job", "worker_main"]


@dataclass(frozen=True)
class Job:
    """One case to analyse.  ``staging_dir``: the empty private folder the worker writes into."""

    case_id: str
    ct_path: str
    report_path: str | None
    staging_dir: str
    formats: tuple[str, ...]
    settings: dict[str, Any]
    attempt: int = 1


@dataclass
class Outcome:
    """What a worker sends back.  ``ok``: the case was analysed and its files are in the staging folder."""

    case_id: str
    ok: bool
    staging_dir: str
    error_code: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    status: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    input_fingerprint: str | None = None
    model_hashes: dict[str, str | None] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    max_rss_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _max_rss_mb() -> float:
    """Peak resident memory of this process (MiB; Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def run_job(job: Job, registry: ModelRegistry) -> Outcome:
    """Analyse ``job``'s case with ``registry``'s models and write its files to ``job.staging_dir``:
    the chosen exports, ``result.json`` + ``result.npz`` (``CaseResult.save``, with the arrays, for
    the GUI) and ``thumb.png`` (the top finding).  Never raises (see the module docstring)."""
    from lungfuse.pipelines.analysis.analyze import analyze_case
    from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
    from lungfuse.pipelines.audit.inputs import model_hashes
    from lungfuse.pipelines.core.errors import (
        ConfigurationError,
        IngestError,
        ModelIntegrityError,
        ReportError,
    )
    from lungfuse.pipelines.export import export_case
    from lungfuse.pipelines.export.source import ExportError
    from lungfuse.pipelines.io.dicom import load_ct
    from lungfuse.pipelines.io.report import load_report

    t0 = time.perf_counter()
    out = Path(job.staging_dir)
    res = Outcome(job.case_id, False, job.staging_dir, worker=_worker_name())
    timings: dict[str, Any] = {}
    stage = "ingest"
    try:
        out.mkdir(parents=True, exist_ok=True)
        ct = Path(job.ct_path)
        t = time.perf_counter()
        # read once here: the analysis, the DICOM exports and the thumbnail share the volume
        vol = load_ct(ct)
        timings["load_ct"] = round(time.perf_counter() - t, 3)
        stage = "report"
        report = load_report(Path(job.report_path)) if job.report_path else None
        stage = "analysis"
        result = analyze_case(Case(vol, report=report, case_id=job.case_id, find_report=False),
                              AnalysisSettings(**job.settings), models=registry)
        result = _with_sources(result, ct, job.report_path)
        timings["analysis"] = result.timings_s.get("total")
        stage = "export"
        t = time.perf_counter()
        exp = export_case(result, out, job.formats, ct_path=ct, volume=vol)
        timings["export"] = exp.timings_s
        # after the exports: result.json with its arrays (+ result.npz) is what the GUI opens
        result.save(out / "result.json")
        timings["save"] = round(time.perf_counter() - t - sum(exp.timings_s.values()), 3)
        t = time.perf_counter()
        png = thumbnail_png(result, vol)
        if png is not None:
            (out / THUMB_NAME).write_bytes(png)
        timings["thumbnail"] = round(time.perf_counter() - t, 3)
        res.ok = True
        res.status = result.status
        res.reasons = [{"code": str(r.code), "severity": str(r.severity), "concerns": list(r.concerns), "text": r.text}
                       for r in result.reasons]
        res.summary = _summary(result)
        res.input_fingerprint = result.provenance.input_fingerprint
        res.model_hashes = model_hashes(result.models)
        res.outputs = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    except (IngestError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        res.error_code = "report_error" if stage == "report" else "ingest_error"
        res.error_message = _one_line(e)
    except ReportError as e:
        res.error_code, res.error_message = "report_error", _one_line(e)
    except ModelIntegrityError as e:
        res.error_code, res.error_message = "model_error", _one_line(e)
    except ConfigurationError as e:
        res.error_code, res.error_message = "config_error", _one_line(e)
    except ExportError as e:
        res.error_code, res.error_message = "export_error", _one_line(e)
    except ValueError as e:
        # load_report's other errors (empty text) are ValueErrors too; elsewhere a ValueError is a bug
        res.error_code = "report_error" if stage == "report" else "internal_error"
        res.error_message = _one_line(e)
        res.traceback = None if stage == "report" else traceback.format_exc()
    except Exception as e:  # noqa: BLE001 - a bug inside the analysis: coded, with its traceback
        res.error_code, res.error_message = "internal_error", f"{stage}: {type(e).__name__}: {_one_line(e)}"
        res.traceback = traceback.format_exc()
    timings["worker_wall"] = round(time.perf_counter() - t0, 3)
    res.timings = timings
    res.max_rss_mb = _max_rss_mb()
    return res


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _with_sources(result: CaseResult, ct: Path, report_path: str | None) -> CaseResult:
    """The result as if the analysis had read ``ct`` and the report by path (it was given the
    volume and the Report): the GUI and the exports find the source CT through ``identifiers``."""
    if result.identifiers is not None:
        result.identifiers = replace(result.identifiers, ct_path=str(ct),
                                     report_source=report_path if report_path else result.identifiers.report_source)
    return result


def _summary(result: CaseResult) -> dict[str, Any]:
    """The result facts the audit summary shows (JSON-ready)."""
    f = top_finding(result)
    probs = [x.malignancy_probability for x in result.findings if x.malignancy_probability is not None]
    return {
        "n_findings": len(result.findings),
        "n_claims": len(result.claims.nodules) if result.claims is not None else 0,
        "report_present": result.report_present,
        "max_malignancy": round(max(probs), 3) if probs else None,
        "flags": sorted({str(x.code) for x in result.flags}),
        "n_unmentioned": sum(1 for x in result.flags if x.code == "unmentioned_finding"),
        "top_finding": None if f is None else {
            "id": f.id, "diameter_mm": round(f.diameter_mm, 1), "side": f.side, "lobe": f.lobe,
            "malignancy_probability": None if f.malignancy_probability is None else round(f.malignancy_probability, 3),
            "detection_score": round(f.detection_score, 3), "claim_id": f.claim_id},
        "findings": {x.id: {"diameter_mm": round(x.diameter_mm, 1),
                            "malignancy_probability": x.malignancy_probability} for x in result.findings},
        "analysis_uid": result.provenance.analysis_uid,
    }


# -- the local process pool --------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the coordinator dies (even by SIGKILL), so that no
    orphan keeps writing into a staging folder that the next run is about to clean up."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent check in worker_main remains
        pass


def worker_main(conn: Connection, threads: int, device: str, models_dir: str | None) -> None:
    """A pool worker: load the models once, then analyse the jobs received on ``conn`` until ``None``.

    Messages sent: ``("ready", name)`` or ``("init_error", message)`` once, then one
    ``("outcome", Outcome)`` per job.
    """
    parent = os.getppid()
    _die_with_parent()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        from lungfuse.pipelines.analysis.analyze import resolve_device
        from lungfuse.pipelines.inference.registry import ModelRegistry

        registry = ModelRegistry()
        registry.get(models_dir, resolve_device(device))
    except Exception as e:  # noqa: BLE001 - the coordinator stops the audit with this message
        conn.send(("init_error", f"{type(e).__name__}: {_one_line(e)}"))
        return
    conn.send(("ready", _worker_name()))
    while True:
        if os.getppid() != parent:  # the coordinator is gone
            return
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        outcome = run_job(job, registry)
        try:
            conn.send(("outcome", outcome))
        except (BrokenPipeError, OSError):
            return
