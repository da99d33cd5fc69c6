"""Batch-audit benchmark: throughput (cases/hour) of ``run_audit`` over copies of the three LIDC cases.

Research software, NOT for diagnostic use.

The batch is ``--copies`` copies of LIDC-IDRI-0001/0002/0003 (each a case folder of per-file
symlinks to the CT, with a written report), audited from scratch with

* a local pool of 1 worker x 2 threads,
* a local pool of 2 workers x 1 thread,
* a 2-worker ``distributed.LocalCluster`` (processes, 1 thread each; 1 torch thread per worker),

each into a fresh folder.  The image cache is off (``cache_image=False``): copies of one CT would
otherwise skip preprocessing and detection after the first.  Per configuration: wall time,
throughput, scaling against 1 worker, the mean ``analyze_case`` time and the per-case overhead
beyond it (in the worker: CT read, exports, saving, thumbnail; in the coordinator: ledger,
publishing, scheduling and the workers' start-up, as worker-seconds per case not spent in a job),
and the peak resident memory of each worker.

    python bench/bench_audit.py --copies 4 --out bench/results/audit.json [--explain] [--formats json,csv]
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CASES = ("LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003")
REPORTS = {
    "LIDC-IDRI-0001": "FINDINGS: A 33 mm spiculated solid mass in the left upper lobe. No other pulmonary nodules.",
    "LIDC-IDRI-0002": "FINDINGS: A 24 mm solid nodule in the right lower lobe. No other pulmonary nodules.",
    "LIDC-IDRI-0003": "FINDINGS: A 28 mm solid mass in the left lower lobe. No other pulmonary nodules.",
}


def lidc_root() -> Path:
    import subprocess

    getter = REPO.parent / "shared" / "data" / "get-lidc"
    out = subprocess.run([str(getter)], check=True, capture_output=True, text=True).stdout.strip()
    return Path(out.splitlines()[-1])


def make_batch(root: Path, dest: Path, copies: int) -> int:
    n = 0
    for k in range(copies):
        for pid in CASES:
            case = dest / f"{pid}-c{k + 1:02d}"
            (case / "ct").mkdir(parents=True)
            for f in sorted((root / pid / "ct").iterdir()):
                (case / "ct" / f.name).symlink_to(f)
            (case / "report.txt").write_text(REPORTS[pid] + "\n")
            n += 1
    return n


def measure(name: str, batch: Path, out: Path, cfg: Any, client: Any = None) -> dict[str, Any]:
    from lungfuse.pipelines.audit import run_audit

    t0 = time.perf_counter()
    run = run_audit(batch, out, cfg, client=client)
    wall = time.perf_counter() - t0
    rows = [r for r in run.rows if r["state"] == "done"]
    n = len(run.rows)
    t = [r["timings"] for r in rows]
    analysis = [float(x["analysis"]) for x in t]
    worker_wall = [float(x["worker_wall"]) for x in t]
    n_workers = cfg.workers if client is None else len(client.scheduler_info()["workers"])
    return {
        "config": name, "workers": n_workers, "threads_per_worker": cfg.threads, "cases": n, "done": len(rows),
        "errors": n - len(rows), "wall_s": round(wall, 1), "cases_per_hour": round(n / wall * 3600, 1),
        "analyze_case_mean_s": round(statistics.mean(analysis), 2),
        "worker_overhead_per_case_s": round(statistics.mean(w - a for w, a in zip(worker_wall, analysis, strict=True)), 2),
        "coordinator_overhead_per_case_s": round((wall * n_workers - sum(worker_wall)) / n, 2),
        "peak_rss_mb_per_worker": dict(sorted(run.peak_rss_mb.items())),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=4, help="copies of the three LIDC cases (default 4: 12 cases)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--explain", action="store_true", help="with explanations (heatmaps, word attributions)")
    ap.add_argument("--configs", default="pool1x2,pool2x1,dask2", help="which configurations to run")
    ap.add_argument("--formats", default=None, help="export formats (default: every format this build has)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lungfuse.pipelines.audit import AuditConfig
    from lungfuse.pipelines.audit.runner import resolve_formats

    formats = resolve_formats(args.formats)  # once: every configuration writes the same exports
    settings = {"cache_image": False, "explain": args.explain}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        batch = Path(tmp) / "batch"
        n = make_batch(lidc_root(), batch, args.copies)
        for name in args.configs.split(","):
            print(f"[bench_audit] {name}: {n} cases ...", flush=True)
            if name == "pool1x2":
                results.append(measure(name, batch, Path(tmp) / name,
                                       AuditConfig(workers=1, threads=2, device="cpu", settings=settings, progress=False,
                                                   formats=formats)))
            elif name == "pool2x1":
                results.append(measure(name, batch, Path(tmp) / name,
                                       AuditConfig(workers=2, threads=1, device="cpu", settings=settings, progress=False,
                                                   formats=formats)))
            elif name == "dask2":
                import distributed

                with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                              silence_logs=40) as cluster, distributed.Client(cluster) as client:
                    results.append(measure(name, batch, Path(tmp) / name,
                                           AuditConfig(threads=1, device="cpu", settings=settings, progress=False,
                                                       formats=formats),
                                           client=client))
            else:
                raise SystemExit(f"unknown configuration {name!r}")
            print(f"[bench_audit] {json.dumps(results[-1])}", flush=True)
    base = next((r for r in results if r["config"] == "pool1x2"), None)
    for r in results:
        r["scaling_vs_pool1x2"] = round(r["cases_per_hour"] / base["cases_per_hour"], 2) if base else None
    doc = {
        "what": "lungfuse audit throughput over copies of the three LIDC cases (image cache off)",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "copies": args.copies, "explain": args.explain, "formats": list(formats), "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "machine": platform.machine(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": list(os.getloadavg()),
        "results": results,
        "notice": "Research software, NOT for diagnostic use.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
