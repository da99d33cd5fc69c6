"""Compare two result JSON files (e.g. ``lungfuse evaluate`` before and after a refactor) figure by figure.

Usage: ``python bench/compare_json.py BEFORE.json AFTER.json [--ignore seconds,seconds_per_scan]``.
Prints every leaf that differs and exits 1 when any figure other than the ignored (timing) keys
differs, 0 when all are identical.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any


def leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, value)`` for every leaf of a JSON document, paths like ``/malignancy/afa_eaf/auc``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--ignore", default="seconds,seconds_per_scan", help="comma-separated leaf key names to skip")
    a = ap.parse_args(argv)
    ignore = {k for k in a.ignore.split(",") if k}
    with open(a.before) as f1, open(a.after) as f2:
        before, after = dict(leaves(json.load(f1))), dict(leaves(json.load(f2)))
    differ = 0
    for key in sorted(set(before) | set(after)):
        if key.rsplit("/", 1)[-1] in ignore or before.get(key) == after.get(key):
            continue
        differ += 1
        print(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    print(f"{len(set(before) | set(after))} figures compared, {differ} differ (ignored: {', '.join(sorted(ignore))})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
