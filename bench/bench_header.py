"""Header-pass timing: the pydicom-free reader vs pydicom, per file (warm page cache).

For every file of one case (default LIDC-IDRI-0002/ct, found with
``../shared/data/get-lidc``) it times, in this process:

* ``fast``: :func:`lungfuse.pipelines.io.dicom_header.read_header_fast` (default
  first read, and with a 64 KiB first read);
* ``pydicom``: ``dcmread(stop_before_pixels=True, specific_tags=...)`` and
  access to every value (decoded by pydicom); ``pydicom (no values)``: the read
  alone, a floor for any pydicom-based pass 1 (ingest's own raw decoding of
  the values lies between the two).

Each pass over all files is repeated ``--repeats`` times, interleaved; the
best and median pass are reported as microseconds per file.  It also times
``import pydicom`` in a fresh interpreter (what the fast path no longer pays).
Not a unit test: timings on a shared machine are noisy.

    python bench/bench_header.py [--case DIR] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def default_case() -> Path:
    out = subprocess.run([str(ROOT.parent / "shared" / "data" / "get-lidc")], check=True, capture_output=True,
                         text=True).stdout.strip()
    return Path(out.splitlines()[-1]) / "LIDC-IDRI-0002" / "ct"


def import_time(module: str, repeats: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                 cwd=ROOT).stdout) for _ in range(repeats)]
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=Path, default=None, help="folder of DICOM files (default LIDC-IDRI-0002/ct)")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    folder = args.case or default_case()
    files = sorted(p for p in folder.rglob("*") if p.is_file())

    import pydicom

    from lungfuse.pipelines.io.dicom_header import KEYWORDS, read_header_fast

    keywords = list(KEYWORDS)

    def fast(path: Path) -> object:
        return read_header_fast(path)

    def fast64(path: Path) -> object:
        return read_header_fast(path, initial_read=64 * 1024)

    def with_pydicom(path: Path) -> object:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=keywords)
            values = [ds.get(kw) for kw in keywords]
            fp.tell()
        return values

    def pydicom_read_only(path: Path) -> object:
        with open(path, "rb") as fp:
            return pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=keywords)

    methods = {"fast": fast, "fast (64 KiB read)": fast64, "pydicom": with_pydicom,
               "pydicom (no values)": pydicom_read_only}
    for fn in methods.values():  # warm the page cache and the memo
        for p in files:
            fn(p)
    passes: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t = time.perf_counter()
            for p in files:
                fn(p)
            passes[name].append(time.perf_counter() - t)

    print(f"{len(files)} files in {folder}; {args.repeats} passes each, warm page cache; python {sys.version.split()[0]}")
    print(f"{'method':22s} {'best us/file':>13s} {'median us/file':>15s} {'best pass ms':>13s}")
    for name, ts in passes.items():
        best, med = min(ts), statistics.median(ts)
        print(f"{name:22s} {best / len(files) * 1e6:13.1f} {med / len(files) * 1e6:15.1f} {best * 1e3:13.2f}")
    ratio = min(passes["pydicom"]) / min(passes["fast"])
    print(f"fast reader is {ratio:.1f}x faster than pydicom per file")
    print(f"import lungfuse.pipelines.io.dicom_header: {import_time('lungfuse.pipelines.io.dicom_header') * 1e3:.1f} ms; "
          f"import pydicom: {import_time('pydicom') * 1e3:.1f} ms (fresh interpreter, median of 5)")


if __name__ == "__main__":
    main()
