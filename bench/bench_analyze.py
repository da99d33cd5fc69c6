"""End-to-end benchmark: DICOM load + ``analyze_case`` on the three LIDC cases.

Research software, NOT for diagnostic use.

Each (case, repeat) runs in a fresh Python process (cold model load and imports excluded from
the per-case time, which is load + analysis as ``CaseResult.timings_s`` measures it; peak RSS is
the whole child process's).  In the same run, as a reference for the I/O + resampling part,
SimpleITK reads the same series and resamples it to the 1.5 mm grid (linear).

    python bench/bench_analyze.py --repeats 3 --out bench/results/analyze.json [--device cuda]

Targets (issue 4): <= 15 s per case on the 2-core CPU including the DICOM load, peak RSS <= 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ("LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003")
REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from lungfuse.pipelines.analysis.analyze import analyze_case
from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
from lungfuse.pipelines.inference.registry import ModelRegistry
path, device, threads, explain = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
if threads:
    torch.set_num_threads(threads)
dev = "cuda" if device == "cuda" else "cpu"
registry = ModelRegistry()
t0 = time.perf_counter(); registry.get(None, dev); t_models = time.perf_counter() - t0
s = AnalysisSettings(device=dev, cache_image=False, explain=explain)
t0 = time.perf_counter()
r = analyze_case(Case(path, find_report=False), s, models=registry)
wall = time.perf_counter() - t0
model_latency = None
if dev == "cuda":
    torch.cuda.synchronize()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "models_s": t_models, "timings_s": r.timings_s, "peak_rss_bytes": peak,
                  "n_findings": len(r.findings), "device": r.device,
                  "gpu_peak_bytes": torch.cuda.max_memory_allocated() if dev == "cuda" else None}))
"""

SITK = r"""
import sys, time
import SimpleITK as sitk
path = sys.argv[1]
t0 = time.perf_counter()
r = sitk.ImageSeriesReader(); r.SetFileNames(r.GetGDCMSeriesFileNames(path)); img = r.Execute()
sp = img.GetSpacing(); size = img.GetSize()
new = [int(round(s * p / 1.5)) for s, p in zip(size, sp)]
out = sitk.Resample(img, new, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), (1.5, 1.5, 1.5), img.GetDirection(),
                    -1024.0, sitk.sitkFloat32)
print(time.perf_counter() - t0)
"""


def _series_dir(case: Path) -> Path:
    """The folder holding the CT slices (SimpleITK needs the exact folder)."""
    for d, _, files in os.walk(case):
        if sum(f.endswith(".dcm") for f in files) > 50:
            return Path(d)
    return case


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", help="folder with LIDC-IDRI-0001..0003 (default: ../shared/data/get-lidc)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: torch default)")
    ap.add_argument("--no-explain", action="store_true")
    ap.add_argument("--out", default="bench/results/analyze.json")
    a = ap.parse_args()
    if a.cases:
        root = Path(a.cases)
    else:
        out = subprocess.run([str(REPO.parent / "shared" / "data" / "get-lidc")], check=True, capture_output=True,
                             text=True).stdout.strip()
        root = Path(out.splitlines()[-1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    runs: dict[str, list[dict]] = {c: [] for c in CASES}
    ref: dict[str, list[float]] = {c: [] for c in CASES}
    for rep in range(a.repeats):
        for c in CASES:  # interleaved, so drift of the shared machine hits every case alike
            p = subprocess.run([sys.executable, "-c", CHILD, str(root / c), a.device, str(a.threads),
                                "0" if a.no_explain else "1"], capture_output=True, text=True, env=env, check=True)
            res = json.loads(p.stdout.strip().splitlines()[-1])
            runs[c].append(res)
            t = subprocess.run([sys.executable, "-c", SITK, str(_series_dir(root / c))], capture_output=True,
                               text=True, env=env, check=True)
            ref[c].append(float(t.stdout.strip().splitlines()[-1]))
            print(f"[{rep + 1}/{a.repeats}] {c}: {res['timings_s']['total']:.1f} s, peak RSS "
                  f"{res['peak_rss_bytes'] / 2**30:.2f} GB, {res['n_findings']} findings; SimpleITK read+resample "
                  f"{ref[c][-1]:.1f} s", flush=True)
    summary = {}
    for c in CASES:
        stages = sorted({k for r in runs[c] for k in r["timings_s"]})
        summary[c] = {
            "total_s_median": statistics.median(r["timings_s"]["total"] for r in runs[c]),
            "stages_s_median": {k: statistics.median(r["timings_s"].get(k, 0.0) for r in runs[c]) for k in stages},
            "peak_rss_gb_max": max(r["peak_rss_bytes"] for r in runs[c]) / 2**30,
            "model_load_s_median": statistics.median(r["models_s"] for r in runs[c]),
            "sitk_read_resample_s_median": statistics.median(ref[c]),
            "n_findings": runs[c][-1]["n_findings"],
        }
    totals = [s["total_s_median"] for s in summary.values()]
    report = {
        "benchmark": "end-to-end analyze_case (load + analysis), fresh process per run",
        "date": time.strftime("%Y-%m-%d"), "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "device": runs[CASES[0]][-1]["device"], "repeats": a.repeats, "explain": not a.no_explain,
        "cases": summary, "worst_case_total_s": max(totals), "target_s": 15.0, "target_rss_gb": 3.0,
        "meets_time_target": max(totals) <= 15.0,
        "meets_rss_target": max(s["peak_rss_gb_max"] for s in summary.values()) <= 3.0,
        "runs": runs, "notice": "LungFuse is research software - NOT FOR DIAGNOSTIC USE.",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
