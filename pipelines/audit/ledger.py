"""The audit ledger: one SQLite row per case (``DIR/ledger.sqlite``, WAL mode).

Research software, NOT for diagnostic use.

Only the coordinator of an audit writes it (workers return their outcome to it), one short
transaction per state change, so a coordinator killed at any point (even SIGKILL) leaves a
consistent ledger: every case is ``pending``, ``running`` (it was being analysed), ``done`` or
``error``.  Columns of ``cases`` (one row per case id, the primary key):

==================  ======================================================================
state               pending / running / done / error
attempts            analyses started for the current input (reset when the input changes)
input_fingerprint   :func:`~.inputs.case_fingerprint` (= ``provenance.input_fingerprint``)
model_hashes        JSON ``{model: sha256}`` of the models that produced the result
ct_path, report     the inputs
status, priority    the CaseResult status and the audit priority (:mod:`.summary`)
reasons             JSON list of the coded reasons (code, severity, concerns, text)
summary             JSON: the few result facts the summary shows (top finding, counts)
error_code/message  why a case is an error (:data:`ERROR_CODES`)
output_dir          ``cases/<case_id>`` (relative to the audit folder); outputs: JSON file list
timings             JSON seconds: analysis stages, exports, wall time in the worker
worker, run_id      who analysed it, in which run; started_utc, finished_utc
==================  ======================================================================
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["ERROR_CODES", "Ledger", "STATES", "utc_now"]

STATES = ("pending", "running", "done", "error")
#: Why a case is an error.  ``timeout``, ``worker_died`` and ``interrupted`` are retried by a later run.
ERROR_CODES = {
    "ingest_error": "the CT cannot be read (corrupt or missing DICOM, not a CT series)",
    "report_error": "the report cannot be read (missing file, not text, unreadable SR)",
    "model_error": "the models cannot be loaded (weights missing or SHA-256 mismatch)",
    "config_error": "bad settings (e.g. cuda without a GPU)",
    "export_error": "the analysis ran but an export failed",
    "timeout": "the analysis ran past --timeout; its worker was stopped",
    "worker_died": "the worker process died while analysing the case",
    "interrupted": "the audit was stopped while analysing the case, more often than the attempt limit",
    "internal_error": "an unexpected error inside the analysis (a bug; traceback in audit.log)",
}
TRANSIENT_ERRORS = frozenset({"timeout", "worker_died", "interrupted"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'error')),
    attempts INTEGER NOT NULL DEFAULT 0,
    input_fingerprint TEXT,
    model_hashes TEXT,
    ct_path TEXT,
    report_path TEXT,
    status TEXT,
    priority REAL,
    reasons TEXT,
    summary TEXT,
    error_code TEXT,
    error_message TEXT,
    output_dir TEXT,
    outputs TEXT,
    timings TEXT,
    worker TEXT,
    run_id TEXT,
    started_utc TEXT,
    finished_utc TEXT,
    updated_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_utc TEXT NOT NULL,
    finished_utc TEXT,
    settings TEXT,
    counts TEXT
);
"""
_JSON_COLUMNS = ("model_hashes", "reasons", "summary", "outputs", "timings")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ledger:
    """The ledger at ``path`` (created with its tables when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # explicit transactions
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a committed state change survives a power cut
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise sqlite3.DatabaseError(f"{self.path}: not a usable audit ledger ({e})") from e

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------------
    def get(self, case_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return _decode(row) if row is not None else None

    def rows(self) -> list[dict[str, Any]]:
        return [_decode(r) for r in self.db.execute("SELECT * FROM cases ORDER BY case_id")]

    # -- writing (the coordinator only) ----------------------------------------------------------
    def upsert(self, case_id: str, **values: Any) -> None:
        """Insert the case or update the given columns, in one transaction."""
        values = {k: (json.dumps(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in values.items()}
        values["updated_utc"] = utc_now()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM cases WHERE case_id = ?", (case_id,)).fetchone() is None:
                values.setdefault("state", "pending")
                cols = ["case_id", *values]
                db.execute(f"INSERT INTO cases ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                           (case_id, *values.values()))
            else:
                db.execute(f"UPDATE cases SET {', '.join(f'{k} = ?' for k in values)} WHERE case_id = ?",
                           (*values.values(), case_id))

    def mark_running(self, case_id: str, run_id: str, worker: str) -> int:
        """State ``running``, one more attempt; returns the attempt number."""
        with self._tx() as db:
            db.execute("UPDATE cases SET state = 'running', attempts = attempts + 1, run_id = ?, worker = ?, "
                       "started_utc = ?, finished_utc = NULL, updated_utc = ? WHERE case_id = ?",
                       (run_id, worker, utc_now(), utc_now(), case_id))
            row = db.execute("SELECT attempts FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        return int(row[0])

    def start_run(self, run_id: str, settings: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO runs (run_id, started_utc, settings) VALUES (?, ?, ?)",
                       (run_id, utc_now(), json.dumps(settings)))

    def finish_run(self, run_id: str, counts: dict[str, int]) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET finished_utc = ?, counts = ? WHERE run_id = ?",
                       (utc_now(), json.dumps(counts), run_id))


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in _JSON_COLUMNS:
        if d.get(k) is not None:
            d[k] = json.loads(d[k])
    return d
