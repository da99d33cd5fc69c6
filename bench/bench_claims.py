"""Speed of the report-claims parser: ``extract_claims`` on a long report and on the dev set.

Research software, NOT for diagnostic use.

The unit tests check what the parser returns; how fast it returns is measured here, so that a
loaded machine cannot fail a unit test.  The long report is the one ``tests/test_claims.py``
parses (400 repeats of a four-sentence block, about 2,000 sentences).  The dev set is
``tests/data/reports_dev.jsonl`` (realistic reports, one at a time).

    python bench/bench_claims.py --repeats 5 --out bench/results/claims_speed.json

Target (from the retired unit-test bound): the long report in < 5 s on the 2-core CPU.

Pathological inputs (issue 21, section 8): long runs of one repeated character (spaces,
tabs, dots, dashes, ...) around "nodule 4 mm", repeated abbreviations, and a 1 MB report
(the dev set repeated).  Each is parsed as ``lungfuse claims`` does
(``extract_claims(load_report(text))``); target: every one, up to 1 MB, in < 2 s (median).
Wall and CPU time are both recorded (on a machine shared by several processes the wall clock
also counts their time), and each input's ratio to the dev-set time, which does not depend on
the machine's speed or load as much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEV_SET = REPO / "tests" / "data" / "reports_dev.jsonl"
BLOCK = (
    "FINDINGS: There is a 6 mm solid nodule in the right upper lobe (series 4, image 56). "
    "No pleural effusion. 1.2 cm subcarinal lymph node. Thyroid nodule 1 cm. "
)
LONG_REPORT = BLOCK * 400 + "\nIMPRESSION: Nodules as above."
TARGET_LONG_S = 5.0
TARGET_PATHOLOGICAL_S = 2.0
NODULE = "nodule 4 mm"


def pathological_inputs(reports: list[str]) -> dict[str, str]:
    """Name -> text: the inputs of issue 21, section 8, and their relatives, up to 1 MB."""
    mb = 1_000_000
    out = {
        "5,000 spaces + nodule": " " * 5000 + NODULE,
        "20,000 spaces + nodule": " " * 20000 + NODULE,
        "3,000 tabs + nodule": "\t" * 3000 + NODULE,
        "50,000 dots + nodule": "." * 50000 + NODULE,
    }
    for name, ch in (("spaces", " "), ("tabs", "\t"), ("dots", "."), ("dashes", "-"), ("underscores", "_"),
                     ("equals", "="), ("stars", "*"), ("newlines", "\n"), ("x", "x"), ("digits", "1"),
                     ("'mm '", "mm "), ("'e.g. '", "e.g. "), ("'RUL '", "RUL "), ("'and '", "and "),
                     ("'x. '", "x. "), ("', '", ", "), ("' \\n'", " \n")):
        run = ch * ((mb - 40) // len(ch))
        out[f"1 MB of {name} + nodule"] = run + NODULE
        out[f"nodule + 1 MB of {name}"] = "FINDINGS: 4 mm nodule in the RUL " + run + " end."
    mix = "Findings: " + " " * 2000 + "." * 2000 + "\t" * 2000 + "-" * 2000 + "RUL 4 mm nodule. " + "_" * 2000
    out["1 MB mixture of runs and fragments"] = (mix * (mb // len(mix) + 1))[:mb]
    dev = "\n\n".join(reports)
    out["1 MB report (dev set repeated)"] = (dev * (mb // len(dev) + 1))[:mb]
    return out


def _time(fn: Callable[[], object], repeats: int) -> list[float]:
    return [w for w, _ in _time2(fn, repeats)]


def _time2(fn: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
    """``(wall, cpu)`` seconds of each of ``repeats`` calls; CPU time (``time.process_time``) is
    what the parser itself spends, wall time also what other processes sharing the CPUs add."""
    out = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    from lungfuse.pipelines.nlp.claims import extract_claims

    import_s = time.perf_counter() - t0
    extract_claims("warm-up: 4 mm nodule in the left lower lobe.")
    reports = [json.loads(line)["text"] for line in DEV_SET.read_text(encoding="utf-8").splitlines() if line.strip()]

    from lungfuse.pipelines.io.report import load_report

    long_s = _time(lambda: extract_claims(LONG_REPORT), args.repeats)
    dev_s = _time(lambda: [extract_claims(t) for t in reports], args.repeats)
    dev_median = statistics.median(dev_s)
    patho = {}
    for name, text in pathological_inputs(reports).items():
        times = _time2(lambda text=text: extract_claims(load_report(text)), args.repeats)
        secs, cpu = [w for w, _ in times], [c for _, c in times]
        patho[name] = {"chars": len(text), "seconds_median": round(statistics.median(secs), 4),
                       "seconds_max": round(max(secs), 4), "cpu_seconds_median": round(statistics.median(cpu), 4),
                       # machine-independent: this input's median over the whole dev set's (137 reports)
                       "ratio_to_dev_set": round(statistics.median(secs) / dev_median, 2)}
    worst = max(v["seconds_median"] for v in patho.values())
    worst_cpu = max(v["cpu_seconds_median"] for v in patho.values())
    result = {
        "benchmark": "extract_claims speed (in-process, after one warm-up call)",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1min": os.getloadavg()[0]},
        "repeats": args.repeats,
        "import_s": round(import_s, 4),
        "long_report": {
            "chars": len(LONG_REPORT),
            "seconds_median": round(statistics.median(long_s), 4),
            "seconds_max": round(max(long_s), 4),
            "target_s": TARGET_LONG_S,
            "within_target": max(long_s) < TARGET_LONG_S,
        },
        "pathological": {
            "target_s": TARGET_PATHOLOGICAL_S,
            "worst_seconds_median": worst,
            "worst_cpu_seconds_median": worst_cpu,
            "within_target": worst < TARGET_PATHOLOGICAL_S,
            "within_target_cpu": worst_cpu < TARGET_PATHOLOGICAL_S,
            "inputs": patho,
        },
        "dev_set": {
            "reports": len(reports),
            "seconds_median": round(statistics.median(dev_s), 4),
            "ms_per_report_median": round(1000 * statistics.median(dev_s) / max(len(reports), 1), 3),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
