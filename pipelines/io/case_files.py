"""Where the files of a case lie: the free-text report that travels with a CT.

Apart from :mod:`.report` on purpose: looking for a report costs a few ``stat`` calls, while
importing the report reader compiles its section-header patterns (~15 ms), which
``lungfuse inspect`` then pays only when there is a report to read.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPORT_NAMES", "find_report"]

#: File names of the free-text report that travels with a case, in the order they are looked for.
REPORT_NAMES = ("report.txt", "report.md", "REPORT.txt")


def find_report(ct_path: Path) -> Path | None:
    """The free-text report that travels with a case: ``report.txt``/``.md`` in or beside ``ct_path``."""
    base = ct_path if ct_path.is_dir() else ct_path.parent
    for d in (base, base.parent):
        for name in REPORT_NAMES:
            if (d / name).is_file():
                return d / name
    return None
