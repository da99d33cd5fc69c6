"""``lungfuse audit INPUT --out DIR``: the batch case audit (:mod:`lungfuse.pipelines.audit`).

Research software — NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

import argparse
from typing import Any

from lungfuse.app.cli.common import NOTICE, console

__all__ = ["add_audit_command", "cmd_audit"]


def cmd_audit(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.audit import AuditConfig, run_audit
    from lungfuse.pipelines.audit.runner import resolve_formats

    con = console()
    formats = resolve_formats(args.formats)  # an unavailable format: one-line error, exit 2, before any work
    settings: dict[str, Any] = {}
    if args.no_explain:
        settings["explain"] = False
    cfg = AuditConfig(workers=args.workers, threads=args.threads, dask=args.dask, formats=formats, device=args.device,
                      timeout_s=args.timeout, max_attempts=args.max_attempts, retry_errors=args.retry_errors,
                      settings=settings, progress=not args.quiet)
    run = run_audit(args.input, args.out, cfg)
    counts = run.counts
    parts = [f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in ("concordant", "realigned", "discordant",
                                                                  "not_assessable", "error")]
    where = f"{run.workers} worker(s) x {run.threads} thread(s)" if run.workers else f"Dask {args.dask}"
    con.print(f"audit: {len(run.rows)} case(s): {', '.join(parts)}; analysed {len(run.analysed)}, "
              f"skipped {len(run.skipped)} unchanged, in {run.wall_s:.1f} s on {where}")
    con.print(f"wrote {run.out_dir / 'summary.html'}, summary.csv, ledger.sqlite, audit.log")
    con.print(f"[bold yellow]{NOTICE}[/bold yellow]")
    return 0


def add_audit_command(sub: Any) -> None:
    s = sub.add_parser(
        "audit", help="audit a batch of cases: analyse, export, rank by audit priority",
        description="Analyse every case of INPUT (a folder of case folders, each a DICOM series with an optional "
                    "report.txt/.md or DICOM SR, or a manifest CSV case_id,ct_path,report_path), write each case's "
                    "exports to DIR/cases/<case_id>/, record it in DIR/ledger.sqlite and rank the cases in "
                    "DIR/summary.html and summary.csv. A re-run skips unchanged cases and resumes a killed one. "
                    "NOT FOR DIAGNOSTIC USE.")
    s.add_argument("input", metavar="INPUT")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--workers", type=int, help="local worker processes (default: cores / 2)")
    s.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    s.add_argument("--dask", metavar="tcp://HOST:8786", help="run on this Dask distributed scheduler instead "
                   "(workers started with --nthreads 1; DIR must be visible to them)")
    s.add_argument("--formats", help="export formats, comma-separated (default: all this build has)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--timeout", type=float, metavar="S", help="stop a case after S seconds (recorded as timeout)")
    s.add_argument("--max-attempts", type=int, default=3, help="analyses of one case before it is given up (default 3)")
    s.add_argument("--retry-errors", action="store_true", help="analyse again the error cases whose inputs did not change")
    s.add_argument("--no-explain", action="store_true", help="skip heatmaps and word attributions (faster)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_audit)
