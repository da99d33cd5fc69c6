"""``lungfuse export``: write a result's exports (PDF, DICOM SR/SEG/SC, JSON, CSV).

Research software - NOT FOR DIAGNOSTIC USE.

``PATH`` is a saved result JSON (``lungfuse analyze --json``; its review sidecar is merged, its
CT found from ``identifiers.ct_path`` or ``--ct``) or a CT (analysed first with ``--report``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lungfuse.app.cli.common import NOTICE, console

__all__ = ["add_export_command", "cmd_export"]


def _load_result(path: Path) -> Any:
    """A saved CaseResult (arrays and review sidecar merged); InputError naming the file otherwise."""
    from lungfuse.pipelines.analysis.result import CaseResult
    from lungfuse.pipelines.core.errors import InputError

    try:
        return CaseResult.load(path)
    except json.JSONDecodeError as e:
        raise InputError(f"not a JSON file (line {e.lineno}: {e.msg})", path) from e
    except (KeyError, TypeError, ValueError) as e:  # a JSON that is not a CaseResult (or a broken sidecar)
        raise InputError(f"not a LungFuse result: {type(e).__name__}: {e}", path) from e


def cmd_export(args: argparse.Namespace) -> int:
    from rich.table import Table

    from lungfuse.pipelines.core.errors import ConfigurationError
    from lungfuse.pipelines.export.api import FORMATS, export_case, resolve_formats

    con = console()
    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such CT or result file")
    formats = resolve_formats(args.formats)
    skipped = [f for f in FORMATS if f not in formats]
    if not args.formats and skipped:
        con.print(f"[yellow]note[/yellow]: {', '.join(skipped)} not available in this build; writing "
                  f"{', '.join(formats)}")
    if args.report and not Path(args.report).is_file():
        raise FileNotFoundError(f"{args.report}: report file not found")
    if path.is_file() and path.suffix.lower() == ".json":
        if args.report:
            raise ConfigurationError(f"--report applies to a CT; {path} is a saved result (its report is in it)")
        result = _load_result(path)
        con.print(f"result {path}: case {result.case_id}, {len(result.findings)} finding(s)"
                  + (", review merged" if result.review is not None else ""))
    else:
        from lungfuse.pipelines.analysis.analyze import analyze_case
        from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
        from lungfuse.pipelines.inference.registry import ModelRegistry

        t0 = time.perf_counter()
        result = analyze_case(Case(path, report=args.report, find_report=not args.no_report),
                              AnalysisSettings(device=args.device, threads=args.threads), models=ModelRegistry())
        if result.identifiers is not None and not result.identifiers.ct_path:
            result.identifiers.ct_path = str(path)
        con.print(f"analysed {path}: {result.status}, {len(result.findings)} finding(s) in "
                  f"{time.perf_counter() - t0:.1f} s (not counted in the export times below)")
    t0 = time.perf_counter()
    res = export_case(result, args.out, formats, deidentify=args.deidentify, ct_path=args.ct)
    total = time.perf_counter() - t0
    t = Table(title=f"export to {res.out_dir}" + (" (de-identified)" if args.deidentify else ""))
    for col in ("format", "files", "time s"):
        t.add_column(col)
    for fmt in formats:
        t.add_row(fmt, "\n".join(p.name for p in res.files.get(fmt, [])), f"{res.timings_s.get(fmt, 0.0):.2f}")
    con.print(t)
    con.print(f"wrote {len(res.all_files)} file(s) in {total:.1f} s")
    con.print(f"[bold yellow]{NOTICE}[/bold yellow]")
    return 0


def add_export_command(sub: Any) -> None:
    """Add ``export`` to ``sub`` (argparse sub-parsers)."""
    s = sub.add_parser("export", help="write a result's exports: PDF, DICOM SR/SEG/SC, JSON, CSV",
                       description="Export a saved result JSON (its review sidecar merged; the CT from the result or "
                       "--ct) or a CT (analysed first, with --report) to DIR: report.pdf, sr.dcm, seg.dcm, "
                       "sc_*.dcm, result.json, findings.csv. All or nothing: a failed format leaves no file. "
                       "NOT FOR DIAGNOSTIC USE.")
    s.add_argument("path", metavar="PATH", help="a result JSON, or a CT (DICOM folder, multi-frame DICOM, NIfTI)")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--formats", metavar="LIST", help="comma-separated, of pdf,sr,seg,sc,json,csv (default: all "
                   "this build has)")
    s.add_argument("--deidentify", action="store_true", help="pseudonym instead of patient and study, source UIDs "
                   "remapped, names, IDs and dates scrubbed from the report text")
    s.add_argument("--report", metavar="FILE", help="the report of a CT PATH (default: report.txt beside it)")
    s.add_argument("--no-report", action="store_true", help="analyse a CT PATH without a report")
    s.add_argument("--ct", metavar="PATH", help="the CT of a result JSON, when the result does not name it or it moved")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="for a CT PATH")
    s.add_argument("--threads", type=int, help="CPU threads for torch, for a CT PATH")
    s.set_defaults(func=cmd_export)
