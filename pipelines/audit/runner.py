"""The audit coordinator: plan from the ledger, run the cases in parallel, publish, summarise.

Research software, NOT for diagnostic use.

:func:`run_audit` (the ``lungfuse audit`` command):

1. reads the cases (:func:`~.inputs.discover_cases`) and takes ``DIR/.audit.lock`` (one audit per
   folder at a time), removes what a killed run left in ``DIR/cases/.staging``;
2. plans from the ledger: a ``done`` case whose input fingerprint and model hashes are unchanged
   (and whose outputs are there) is skipped, as is an ``error`` case with unchanged inputs unless
   its error was transient (``timeout``, ``worker_died``) and attempts remain, or ``retry_errors``;
   a case left ``running`` by a dead coordinator is retried until ``max_attempts`` analyses were
   started, then recorded as ``interrupted``;
3. runs the cases on a local pool of spawned worker processes (:func:`~.worker.worker_main`;
   models loaded once per worker; workers x threads = cores by default) or on a Dask cluster
   (:mod:`.dask_backend`).  A worker writes a case into its private staging folder; the
   coordinator moves the folder into ``DIR/cases/<case_id>`` (two renames) and only then records
   the row ``done``: a case is published whole or not at all, and a kill at any point leaves
   either the previous outputs or the new ones.  A worker that dies, or runs past ``timeout_s``
   (it is killed), makes its case an error (``worker_died`` / ``timeout``) and is replaced;
4. writes ``summary.csv`` and ``summary.html`` (:mod:`.summary`) and one line per case to
   ``DIR/audit.log``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungfuse.pipelines.audit.inputs import AuditCase, case_fingerprint, current_model_hashes, discover_cases
from lungfuse.pipelines.audit.ledger import TRANSIENT_ERRORS, Ledger, utc_now
from lungfuse.pipelines.audit.summary import priority_score, write_summary
from lungfuse.pipelines.audit.worker import Job, Outcome
from lungfuse.pipelines.core.errors import ConfigurationError, LungFuseError
from lungfuse.pipelines.export.api import available_formats, resolve_formats  # re-exported: the audit CLI and tests use them here

__all__ = ["AuditConfig", "AuditError", "AuditRun", "available_formats", "resolve_formats", "run_audit", "status_counts"]

STAGING = ".staging"


class AuditError(LungFuseError):
    """The audit as a whole cannot run (the folder is locked, the workers cannot load the models)."""


@dataclass(frozen=True)
class AuditConfig:
    """How :func:`run_audit` runs.

    Attributes:
        workers: local worker processes (default: cores // 2, at least 1; never more than cases).
        threads: torch threads per worker (default: cores // workers, so workers x threads = cores).
        dask: a ``distributed`` scheduler address (``tcp://HOST:8786``): run there instead.
        formats: export formats (default: every format this build has, :func:`available_formats`).
        device: ``auto``, ``cpu`` or ``cuda``.
        timeout_s: a case running longer is stopped (its worker killed) and recorded ``timeout``;
            local pool only (a running Dask task cannot be stopped).
        max_attempts: analyses started for one case (with unchanged inputs) before a case left
            ``running`` by a killed audit, or failing transiently, is given up.
        retry_errors: analyse again the error cases whose inputs did not change.
        settings: extra :class:`~lungfuse.pipelines.analysis.case.AnalysisSettings` fields
            (``explain``, ``detection_threshold``, ...).
        progress: show a progress bar (rich) on the console.
    """

    workers: int | None = None
    threads: int | None = None
    dask: str | None = None
    formats: tuple[str, ...] | None = None
    device: str = "auto"
    timeout_s: float | None = None
    max_attempts: int = 3
    retry_errors: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    models_dir: str | None = None
    progress: bool = True


@dataclass
class AuditRun:
    """What one :func:`run_audit` call did: the cases analysed and skipped, the final rows, timings."""

    run_id: str
    out_dir: Path
    analysed: list[str]
    skipped: list[str]
    rows: list[dict[str, Any]]
    wall_s: float
    workers: int
    threads: int
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Cases per summary status (concordant, realigned, discordant, not_assessable, error, ...)."""
        return status_counts(self.rows)


def status_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Ledger rows per summary status: the CaseResult status of a done case, else its state."""
    out: dict[str, int] = {}
    for r in rows:
        k = str(r["status"] if r["state"] == "done" else r["state"])
        out[k] = out.get(k, 0) + 1
    return out


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_audit(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], config: AuditConfig | None = None,
              *, client: Any = None) -> AuditRun:
    """Audit every case of ``source`` into ``out_dir`` (see the module docstring).

    ``client``: a ``distributed.Client`` to run on (instead of ``config.dask``'s address).

    Raises:
        FileNotFoundError / ManifestError: the input (names the file or line).
        ConfigurationError: bad settings (formats not available, workers < 1, cuda without GPU).
        AuditError: the folder is locked by another audit; the workers cannot load the models.
    """
    from lungfuse.pipelines.analysis.case import AnalysisSettings

    cfg = config or AuditConfig()
    t_start = time.perf_counter()
    cases = discover_cases(source)
    formats = cfg.formats if cfg.formats is not None else available_formats()
    formats = resolve_formats(list(formats))
    cores = _cores()
    if cfg.workers is not None and cfg.workers < 1:
        raise ConfigurationError(f"--workers {cfg.workers}: need at least 1")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigurationError(f"--threads {cfg.threads}: need at least 1")
    workers = cfg.workers or max(1, cores // 2)
    threads = cfg.threads or max(1, cores // workers)
    settings = {"device": cfg.device, **cfg.settings, "threads": threads}
    AnalysisSettings(**settings)  # bad settings fail here, once, not in every worker
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        staging_root = out / "cases" / STAGING
        shutil.rmtree(staging_root, ignore_errors=True)  # what a killed run left: never published
        staging_root.mkdir(parents=True)
        with Ledger(out / "ledger.sqlite") as ledger, _AuditLog(out / "audit.log") as log:
            run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
            ledger.start_run(run_id, {"source": str(source), "formats": list(formats), "workers": workers,
                                      "threads": threads, "dask": cfg.dask, "settings": settings})
            hashes = current_model_hashes(cfg.models_dir)
            todo, skipped = _plan(cases, ledger, hashes, cfg, out, log)
            co = _Coordinator(out, ledger, log, run_id, formats, settings, hashes)
            if todo:
                with _progress(len(todo), len(skipped), cfg.progress) as advance:
                    co.advance = advance
                    if cfg.dask is not None or client is not None:
                        _run_dask(co, todo, cfg, threads, client)
                    else:
                        _run_local(co, todo, cfg, min(workers, len(todo)), threads)
            rows = [r for r in ledger.rows() if r["case_id"] in {c.case_id for c in cases}]
            ledger.finish_run(run_id, status_counts(rows))
            write_summary(out, cases, rows)
            shutil.rmtree(staging_root, ignore_errors=True)
        return AuditRun(run_id, out, [c.case_id for c in todo], skipped, rows, round(time.perf_counter() - t_start, 2),
                        workers if cfg.dask is None and client is None else 0, threads, co.peak_rss_mb)
    finally:
        lock.close()


def _lock(out: Path) -> Any:
    fh = open(out / ".audit.lock", "a+")  # noqa: SIM115 - held for the whole audit
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        fh.close()
        raise AuditError(f"{out}: another lungfuse audit is running on this folder (it holds {out / '.audit.lock'})") from e
    return fh


def _plan(cases: list[AuditCase], ledger: Ledger, hashes: dict[str, str | None], cfg: AuditConfig, out: Path,
          log: _AuditLog) -> tuple[list[AuditCase], list[str]]:
    """(cases to analyse, ids skipped); updates the rows of new and changed cases."""
    todo: list[AuditCase] = []
    skipped: list[str] = []
    for c in cases:
        fp = case_fingerprint(c)
        row = ledger.get(c.case_id)
        inputs = {"input_fingerprint": fp, "ct_path": str(c.ct_path),
                  "report_path": str(c.report_path) if c.report_path else None}
        changed = row is None or row["input_fingerprint"] != fp or (row["model_hashes"] or hashes) != hashes
        if changed:
            ledger.upsert(c.case_id, state="pending", attempts=0, model_hashes=hashes, error_code=None,
                          error_message=None, **inputs)
            todo.append(c)
            continue
        assert row is not None
        state, attempts = row["state"], int(row["attempts"])
        published = (out / "cases" / c.case_id / "result.json").is_file()
        if state == "done" and published:
            skipped.append(c.case_id)
        elif state == "done" or state == "pending":
            todo.append(c)
        elif state == "error":
            if cfg.retry_errors or (row["error_code"] in TRANSIENT_ERRORS and attempts < cfg.max_attempts):
                ledger.upsert(c.case_id, state="pending")
                todo.append(c)
            else:
                skipped.append(c.case_id)
        elif state == "running":  # left by a coordinator that died while the case was being analysed
            if attempts >= cfg.max_attempts:
                msg = (f"given up after {attempts} attempt(s): the audit was stopped each time while this case "
                       "was being analysed")
                ledger.upsert(c.case_id, state="error", error_code="interrupted", error_message=msg,
                              finished_utc=utc_now())
                log.line(c.case_id, "error", f"interrupted: {msg}")
                skipped.append(c.case_id)
            else:
                ledger.upsert(c.case_id, state="pending")
                todo.append(c)
    for cid in skipped:
        r = ledger.get(cid)
        assert r is not None
        log.line(cid, "skipped", f"unchanged ({r['state']}{': ' + r['status'] if r['status'] and r['state'] == 'done' else ''})")
    return todo, skipped


class _AuditLog:
    """``DIR/audit.log``: one line per case and event (UTC time, case id, what happened), appended."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__

    def line(self, case_id: str, what: str, detail: str = "") -> None:
        self.fh.write(f"{utc_now()} {case_id} {what}" + (f" {' '.join(detail.split())}" if detail else "") + "\n")
        self.fh.flush()

    def __enter__(self) -> _AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


class _Coordinator:
    """What both backends call: start a case (ledger ``running``), finish it (publish + ledger)."""

    def __init__(self, out: Path, ledger: Ledger, log: _AuditLog, run_id: str, formats: tuple[str, ...],
                 settings: dict[str, Any], hashes: dict[str, str | None]) -> None:
        self.out, self.ledger, self.log, self.run_id = out, ledger, log, run_id
        self.formats, self.settings, self.hashes = formats, settings, hashes
        self.advance: Callable[[str], None] = lambda _msg: None
        self.peak_rss_mb: dict[str, float] = {}

    def start(self, case: AuditCase, worker: str) -> Job:
        attempt = self.ledger.mark_running(case.case_id, self.run_id, worker)
        staging = self.out / "cases" / STAGING / f"{case.case_id}.{self.run_id}.{attempt}"
        return Job(case.case_id, str(case.ct_path), str(case.report_path) if case.report_path else None, str(staging),
                   self.formats, self.settings, attempt)

    def finish(self, job: Job, o: Outcome) -> None:
        staging = Path(job.staging_dir)
        final = self.out / "cases" / job.case_id
        if o.worker:
            self.peak_rss_mb[o.worker] = max(self.peak_rss_mb.get(o.worker, 0.0), o.max_rss_mb)
        if o.ok:
            _publish(staging, final)
            score = priority_score(o.status or "", o.reasons, o.summary)
            self.ledger.upsert(job.case_id, state="done", status=o.status, priority=score, reasons=o.reasons,
                               summary=o.summary, model_hashes=o.model_hashes, error_code=None, error_message=None,
                               output_dir=f"cases/{job.case_id}", outputs=o.outputs, timings=o.timings,
                               worker=o.worker, finished_utc=utc_now())
            codes = ",".join(r["code"] for r in o.reasons) or "-"
            self.log.line(job.case_id, "done", f"{o.status} priority={score:g} reasons={codes} attempt={job.attempt} "
                          f"wall={o.timings.get('worker_wall', 0):.1f}s worker={o.worker}")
            if o.input_fingerprint and o.input_fingerprint != self.ledger.get(job.case_id)["input_fingerprint"]:  # type: ignore[index]
                # the header-only fingerprint missed what the reader did (a slice it could not read):
                # recorded, so that the difference is visible; the next run compares the cheap one again
                self.log.line(job.case_id, "note", f"analysis fingerprint {o.input_fingerprint[:12]} differs from the "
                              "header-only one")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            # the previous outputs describe other inputs now: an error case has none
            _unpublish(final, self.out / "cases" / STAGING)
            code = o.error_code or "internal_error"
            self.ledger.upsert(job.case_id, state="error", status=None, priority=None, error_code=code,
                               error_message=o.error_message, output_dir=None, outputs=[], timings=o.timings,
                               worker=o.worker, finished_utc=utc_now(), summary=None, reasons=[])
            self.log.line(job.case_id, "error", f"{code}: {o.error_message} attempt={job.attempt} worker={o.worker}")
            if o.traceback:
                for tb_line in o.traceback.rstrip().splitlines():
                    self.log.fh.write(f"    {tb_line}\n")
                self.log.fh.flush()
        self.advance(job.case_id)

    def failed(self, job: Job, code: str, message: str, worker: str) -> None:
        """A case whose worker gave no outcome (died, timed out)."""
        self.finish(job, Outcome(job.case_id, False, job.staging_dir, error_code=code, error_message=message,
                                 worker=worker))


def _publish(staging: Path, final: Path) -> None:
    """Move the complete staging folder to ``final``; a previous ``final`` goes first (renamed aside,
    then deleted), so ``final`` is always one whole set of outputs or absent."""
    old = None
    if final.exists():
        old = staging.parent / f"old.{final.name}.{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _unpublish(final: Path, staging_root: Path) -> None:
    if final.exists():
        old = staging_root / f"old.{final.name}.{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)


class _progress:
    """A rich progress bar (count, rate in cases/hour, ETA) as a context manager giving ``advance(case_id)``."""

    def __init__(self, total: int, skipped: int, enabled: bool) -> None:
        self.total, self.skipped, self.enabled = total, skipped, enabled
        self.prog: Any = None

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda _cid: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.prog = Progress(TextColumn("[bold]audit[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                             TimeElapsedColumn())
        self.prog.start()
        desc = f"({self.skipped} unchanged, skipped)" if self.skipped else ""
        task = self.prog.add_task(desc, total=self.total, rate="- cases/h")
        t0 = time.perf_counter()

        def advance(case_id: str) -> None:
            done = self.prog.tasks[0].completed + 1
            rate = done / max(time.perf_counter() - t0, 1e-6) * 3600
            self.prog.update(task, advance=1, rate=f"{rate:.0f} cases/h", description=f"{case_id} {desc}".strip())

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.prog is not None:
            self.prog.stop()


# -- the local process pool ---------------------------------------------------------------------------
@dataclass
class _Slot:
    proc: Any
    conn: Any
    name: str = ""
    ready: bool = False
    job: Job | None = None
    t0: float = 0.0


def _spawn(ctx: Any, threads: int, device: str, models_dir: str | None) -> _Slot:
    from lungfuse.pipelines.audit.worker import worker_main

    parent, child = ctx.Pipe()
    # the worker's BLAS/OpenMP pools are sized when torch is imported: tell them before it is
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        proc = ctx.Process(target=worker_main, args=(child, threads, device, models_dir), daemon=True,
                           name="lungfuse-audit-worker")
        proc.start()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    child.close()
    return _Slot(proc, parent)


def _run_local(co: _Coordinator, todo: list[AuditCase], cfg: AuditConfig, n: int, threads: int) -> None:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    queue = deque(todo)
    slots = [_spawn(ctx, threads, cfg.device, cfg.models_dir) for _ in range(n)]

    def replace_slot(i: int) -> None:
        s = slots[i]
        s.proc.kill()
        s.proc.join(5)
        s.conn.close()
        slots[i] = _spawn(ctx, threads, cfg.device, cfg.models_dir) if queue else _Slot(None, None)

    try:
        while queue or any(s.job is not None for s in slots):
            for s in slots:
                if s.proc is not None and s.ready and s.job is None and queue:
                    case = queue.popleft()
                    s.job = co.start(case, s.name)
                    s.t0 = time.monotonic()
                    s.conn.send(s.job)
            live = [s for s in slots if s.proc is not None]
            if not live:
                raise AuditError("no audit worker left to run the remaining cases")
            wait([x for s in live for x in (s.conn, s.proc.sentinel)], timeout=0.5)
            for i, s in enumerate(slots):
                if s.proc is None:
                    continue
                msg = None
                try:
                    if s.conn.poll():
                        msg = s.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None:
                    kind, payload = msg
                    if kind == "ready":
                        s.ready, s.name = True, payload
                    elif kind == "init_error":
                        raise AuditError(f"an audit worker could not load the models: {payload}")
                    elif kind == "outcome" and s.job is not None:
                        job, s.job = s.job, None
                        co.finish(job, payload)
                    continue
                if not s.proc.is_alive():
                    code = s.proc.exitcode
                    if s.job is not None:
                        job, s.job = s.job, None
                        co.failed(job, "worker_died", f"the worker process died while analysing the case "
                                  f"(exit code {code}{', killed by signal ' + str(-code) if code and code < 0 else ''})",
                                  s.name)
                    elif not s.ready:
                        raise AuditError(f"an audit worker process exited while starting (exit code {code})")
                    replace_slot(i)
                elif s.job is not None and cfg.timeout_s and time.monotonic() - s.t0 > cfg.timeout_s:
                    job, s.job = s.job, None
                    name = s.name
                    replace_slot(i)
                    co.failed(job, "timeout", f"the analysis ran past --timeout {cfg.timeout_s:g} s; its worker "
                              "was stopped", name)
    finally:
        for s in slots:
            if s.proc is None:
                continue
            try:
                s.conn.send(None)
            except OSError:
                pass
        for s in slots:
            if s.proc is None:
                continue
            s.proc.join(10)
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join(5)


# -- Dask ------------------------------------------------------------------------------------------
def _run_dask(co: _Coordinator, todo: list[AuditCase], cfg: AuditConfig, threads: int, client: Any) -> None:
    try:
        from distributed import Client, as_completed
        from distributed.scheduler import KilledWorker
    except ImportError as e:  # pragma: no cover - pinned in requirements.txt
        raise ConfigurationError(f"--dask needs the 'distributed' package: {e}") from e
    from lungfuse.pipelines.audit.dask_backend import ModelsPlugin, dask_run_job

    own = client is None
    if own:
        try:
            client = Client(cfg.dask, timeout=30)
        except (OSError, TimeoutError) as e:
            raise AuditError(f"--dask {cfg.dask}: cannot reach the scheduler ({e})") from e
    try:
        client.register_plugin(ModelsPlugin(threads, cfg.device, cfg.models_dir), name=ModelsPlugin.name)
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        queue = deque(todo)
        running: dict[Any, Job] = {}

        def submit() -> Any:
            case = queue.popleft()
            job = co.start(case, "dask")
            fut = client.submit(dask_run_job, job, key=f"lungfuse-audit-{job.case_id}-{co.run_id}-{job.attempt}",
                                pure=False)
            running[fut] = job
            return fut

        # at most two cases per worker in flight: the ledger's 'running' means dispatched, not queued for hours
        ac = as_completed([submit() for _ in range(min(len(queue), 2 * n_workers))])
        for fut in ac:
            job = running.pop(fut)
            try:
                co.finish(job, Outcome(**fut.result()))
            except KilledWorker as e:
                co.failed(job, "worker_died", f"the Dask workers running the case died ({e})", "dask")
            except Exception as e:  # noqa: BLE001 - any other task failure: coded, the batch goes on
                co.failed(job, "internal_error", f"Dask task failed: {type(e).__name__}: {e}", "dask")
            if queue:
                ac.add(submit())
    finally:
        if own:
            client.close()

