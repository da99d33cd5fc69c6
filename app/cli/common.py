"""What every ``lungfuse`` command shares: the console, JSON output, the device, the bundled LIDC cases.

Research software — NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["NOTICE", "console", "write_json", "local_cases", "timed_logger", "pick_device"]

NOTICE = "LungFuse is research software — NOT FOR DIAGNOSTIC USE."


def console() -> Any:
    from rich.console import Console

    # rich falls back to 80 columns when stdout is not a terminal; the findings table needs more
    return Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def write_json(obj: Any, path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def local_cases(arg: str | None) -> Path:
    """The three bundled LIDC cases: --cases DIR, $LUNGFUSE_LIDC, or ../shared/data/get-lidc."""
    import subprocess

    if arg:
        return Path(arg)
    if os.environ.get("LUNGFUSE_LIDC"):
        return Path(os.environ["LUNGFUSE_LIDC"])
    getter = Path(__file__).resolve().parents[3] / "shared" / "data" / "get-lidc"
    if not getter.exists():
        raise FileNotFoundError(f"the LIDC cases are needed: pass --cases DIR (no {getter})")
    out = subprocess.run([str(getter)], check=True, capture_output=True, text=True).stdout.strip()
    return Path(out.splitlines()[-1])


def timed_logger(con: Any) -> Callable[..., None]:
    """``say(msg, style=None)``: print ``msg`` prefixed with the seconds since this call.

    The message is escaped: progress lines start with "[train]" / "[fpr]", which rich would
    otherwise swallow as markup tags."""
    import time

    from rich.markup import escape

    t0 = time.time()

    def say(msg: str, style: str | None = None) -> None:
        con.print(f"[{time.time() - t0:7.0f} s] {escape(msg)}", style=style)

    return say


def pick_device(name: str) -> str:
    """``--device`` resolved (``auto`` -> cuda or cpu); one that cannot be used is a ConfigurationError."""
    from lungfuse.pipelines.analysis.analyze import resolve_device
    from lungfuse.pipelines.core.errors import ConfigurationError

    try:
        return resolve_device(name)
    except ValueError as exc:  # resolve_device's only error: a device this machine lacks
        raise ConfigurationError(f"--device {name}: {exc}") from exc
