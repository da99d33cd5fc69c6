"""Ingest benchmark: LungFuse ``load_ct`` vs SimpleITK ``ImageSeriesReader`` vs a naive pydicom loop.

Each method runs as a *whole fresh process* (interpreter start + imports + load),
``--repeats`` times, interleaved so that machine noise hits all methods alike;
we report medians and ratios.  A fourth method, ``read_bytes``, only reads
every file's bytes from disk in a fresh process: the floor that any loader
pays.  The in-process load time (imports excluded) is reported too.

Two more methods time the ``lungfuse`` command itself, as a user runs it:
``lungfuse_inspect`` (``lungfuse inspect CASE``: parser, imports, header scan,
load, series list, report lookup, the printed table) and ``lungfuse_help``
(``lungfuse --help``).  The goals: inspect <= 0.5 x SimpleITK's reader on the
same case, whole process, in the same interleaved run; ``--help`` < 0.2 s.

The OS page cache is warm for every method (the first, discarded round warms
it), so the figures compare decoding work, not the disk.

    python bench/bench_ingest.py --out bench/results/ingest.json [--case DIR]
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SNIPPETS = {
    "lungfuse": """
import time, sys
t0 = time.perf_counter()
from lungfuse.pipelines.io.dicom import load_ct
t1 = time.perf_counter()
v = load_ct(sys.argv[1])
t2 = time.perf_counter()
print(t2 - t1, v.hu.shape, float(v.hu.mean()))
""",
    "simpleitk": """
import time, sys
t0 = time.perf_counter()
import SimpleITK as sitk
t1 = time.perf_counter()
r = sitk.ImageSeriesReader()
files = r.GetGDCMSeriesFileNames(sys.argv[1] + '/ct')
r.SetFileNames(files)
img = r.Execute()
a = sitk.GetArrayViewFromImage(img)
t2 = time.perf_counter()
print(t2 - t1, a.shape, float(a.mean()))
""",
    "pydicom_naive": """
import time, sys, glob
t0 = time.perf_counter()
import numpy as np, pydicom
t1 = time.perf_counter()
dss = [pydicom.dcmread(f) for f in glob.glob(sys.argv[1] + '/ct/*.dcm')]
dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
vol = np.stack([d.pixel_array.astype(np.int16) * int(d.RescaleSlope) + np.int16(d.RescaleIntercept) for d in dss])
t2 = time.perf_counter()
print(t2 - t1, vol.shape, float(vol.mean()))
""",
    "read_bytes": """
import time, sys, glob
t0 = time.perf_counter()
t1 = time.perf_counter()
n = 0
for f in glob.glob(sys.argv[1] + '/ct/*.dcm'):
    with open(f, 'rb') as fh:
        n += len(fh.read())
t2 = time.perf_counter()
print(t2 - t1, n, 0.0)
""",
}


#: Methods that run the installed ``lungfuse`` command (argv after the program) instead of a snippet.
COMMANDS = {
    "lungfuse_inspect": ["inspect", "{case}"],
    "lungfuse_help": ["--help"],
}


def lungfuse_program() -> list[str]:
    """The ``lungfuse`` console script beside this interpreter, or ``python -m lungfuse.app.cli``."""
    script = Path(sys.executable).parent / "lungfuse"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lungfuse.app.cli"]


def find_case(case: str | None) -> Path:
    if case:
        return Path(case)
    getter = ROOT.parent / "shared" / "data" / "get-lidc"
    if not getter.exists():
        sys.exit(f"../shared is absent ({getter}); pass --case DIR")
    folder = subprocess.run([str(getter)], check=True, capture_output=True, text=True).stdout.strip()
    return Path(folder) / "LIDC-IDRI-0002"


def run_once(method: str, case: Path) -> tuple[float, float]:
    """Wall seconds of one fresh process, and its own in-process load seconds (NaN for a command)."""
    if method in COMMANDS:
        argv = lungfuse_program() + [a.format(case=case) for a in COMMANDS[method]]
    else:
        argv = [sys.executable, "-c", SNIPPETS[method], str(case)]
    t = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t
    return wall, (float("nan") if method in COMMANDS else float(out.stdout.split()[0]))


def compile_bytecode() -> None:
    """Write LungFuse's ``.pyc`` files, as ``pip install`` of a wheel does.

    An editable install leaves them to the first run, and with ``PYTHONDONTWRITEBYTECODE`` set
    (as on the shared dev machines) no run writes them: every process would then compile
    LungFuse's modules from source, a cost no installed copy pays.
    """
    import compileall

    for folder in ("app", "models", "pipelines"):
        if (ROOT / folder).is_dir():
            compileall.compile_dir(str(ROOT / folder), quiet=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", help="LIDC case folder (default: LIDC-IDRI-0002 from ../shared)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(HERE / "results" / "ingest.json"))
    args = ap.parse_args()
    case = find_case(args.case)
    nbytes = sum(f.stat().st_size for f in (case / "ct").glob("*.dcm"))
    # inspect right after SimpleITK in each round, so that a pair meets the same machine load
    methods = ["lungfuse", "simpleitk", "lungfuse_inspect", "pydicom_naive", "read_bytes", "lungfuse_help"]
    assert sorted(methods) == sorted(list(SNIPPETS) + list(COMMANDS))
    compile_bytecode()
    for m in methods:  # warm the page cache and the import caches
        run_once(m, case)
    walls: dict[str, list[float]] = {m: [] for m in methods}
    inproc: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):
        for m in methods:
            w, i = run_once(m, case)
            walls[m].append(w)
            inproc[m].append(i)
    med = {m: statistics.median(v) for m, v in walls.items()}
    med_in = {m: statistics.median(v) for m, v in inproc.items() if m not in COMMANDS}
    result = {
        "case": str(case.name),
        "n_files": len(list((case / "ct").glob("*.dcm"))),
        "bytes": nbytes,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "whole_process_median_s": med,
        "in_process_load_median_s": med_in,
        "whole_process_all_s": walls,
        "ratio_lungfuse_to_simpleitk": med["lungfuse"] / med["simpleitk"],
        "ratio_lungfuse_to_pydicom_naive": med["lungfuse"] / med["pydicom_naive"],
        "ratio_lungfuse_to_read_bytes": med["lungfuse"] / med["read_bytes"],
        "in_process_ratio_lungfuse_to_simpleitk": med_in["lungfuse"] / med_in["simpleitk"],
        "in_process_ratio_lungfuse_to_read_bytes": med_in["lungfuse"] / max(med_in["read_bytes"], 1e-9),
        "ratio_lungfuse_inspect_to_simpleitk": med["lungfuse_inspect"] / med["simpleitk"],
        # robustness check on a shared machine: the median over rounds of each round's own ratio
        "paired_ratio_lungfuse_inspect_to_simpleitk_median": statistics.median(
            a / b for a, b in zip(walls["lungfuse_inspect"], walls["simpleitk"], strict=True)),
        "lungfuse_help_median_s": med["lungfuse_help"],
        "goal": "lungfuse <= 0.5 x simpleitk (whole process), close to read_bytes",
        "goal_inspect": "`lungfuse inspect CASE` <= 0.5 x simpleitk (whole process); `lungfuse --help` < 0.2 s",
    }
    result["goal_met"] = result["ratio_lungfuse_to_simpleitk"] <= 0.5
    result["goal_inspect_met"] = (result["ratio_lungfuse_inspect_to_simpleitk"] <= 0.5
                                  and result["lungfuse_help_median_s"] < 0.2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'method':<18}{'process s':>11}{'in-proc s':>11}")
    for m in methods:
        print(f"{m:<18}{med[m]:>11.3f}{med_in.get(m, float('nan')):>11.3f}")
    print(f"lungfuse / simpleitk = {result['ratio_lungfuse_to_simpleitk']:.2f} (whole process), "
          f"{result['in_process_ratio_lungfuse_to_simpleitk']:.2f} (in process)")
    print(f"lungfuse inspect / simpleitk = {result['ratio_lungfuse_inspect_to_simpleitk']:.2f} (whole process; "
          f"median of per-round ratios {result['paired_ratio_lungfuse_inspect_to_simpleitk_median']:.2f}); "
          f"lungfuse --help {result['lungfuse_help_median_s']:.3f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
