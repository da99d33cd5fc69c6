"""Export benchmark: time of each export format on LIDC-IDRI-0001 and LIDC-IDRI-0003.

Research software, NOT for diagnostic use.

Each case is analysed once (``analyze_case``, CPU, reported apart and excluded from the export
times).  Then each format is exported alone ``--repeats`` times into a fresh folder (a new
export context each time, so a format that needs the CT, e.g. the PDF, pays its re-read), and
all available formats together (one context: the CT and the key images are shared); the median
is reported.  Formats this build does not have (the DICOM writers before their branch is
merged) are listed as not available.

    python bench/bench_export.py --out bench/results/export.json [--repeats 3] [--threads 1]

LIDC-IDRI-0003 (the test patient) is only timed here; nothing is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
#: the report given with each case (None: image only)
CASES: dict[str, str | None] = {
    "LIDC-IDRI-0001": ("FINDINGS: There is a 33 mm spiculated solid non-calcified mass in the left lung.\n"
                       "IMPRESSION: Left lung mass, suspicious."),
    "LIDC-IDRI-0003": None,
}


def _lidc_root() -> Path:
    import subprocess

    get = REPO.parent / "shared" / "data" / "get-lidc"
    out = subprocess.run([str(get)], check=True, capture_output=True, text=True).stdout.strip()
    return Path(out.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lidc-root", type=Path)
    args = ap.parse_args(argv)

    import torch

    from lungfuse.pipelines.analysis.analyze import analyze_case
    from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
    from lungfuse.pipelines.export.api import FORMATS, available_formats, export_case
    from lungfuse.pipelines.inference.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    root = args.lidc_root or _lidc_root()
    available = available_formats()
    registry = ModelRegistry()
    cases = {}
    for pid, report in CASES.items():
        t0 = time.perf_counter()
        result = analyze_case(Case(root / pid / "ct", report=report, find_report=False),
                              AnalysisSettings(device="cpu", threads=args.threads), models=registry)
        analysis_s = time.perf_counter() - t0
        per_format: dict[str, object] = {}
        for fmt in FORMATS:
            if fmt not in available:
                per_format[fmt] = "not available in this build"
                continue
            times, sizes = [], 0
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    res = export_case(result, tmp, fmt)
                    times.append(time.perf_counter() - t0)
                    sizes = sum(p.stat().st_size for p in res.all_files)
            per_format[fmt] = {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times],
                               "bytes": sizes}
        together = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                export_case(result, tmp, available)
                together.append(time.perf_counter() - t0)
        cases[pid] = {"report": report is not None, "n_findings": len(result.findings),
                      "analysis_s (excluded)": round(analysis_s, 2), "formats": per_format,
                      "all_available_together": {"formats": list(available),
                                                 "median_s": round(statistics.median(together), 3),
                                                 "runs_s": [round(t, 3) for t in together]}}
        print(pid, json.dumps(cases[pid]), flush=True)
    out = {"benchmark": "bench/bench_export.py", "repeats": args.repeats, "threads": args.threads,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
           "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "notes": "export times exclude the analysis; a format alone re-reads the CT when it needs it (pdf); "
                    "the 2-CPU machine is shared with other jobs, so times are indicative",
           "cases": cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
