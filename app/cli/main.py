"""``lungfuse`` command-line entry point: the parser and the error policy.

Product commands (:mod:`.product`): ``info``, ``inspect``, ``claims``, ``demo``, ``analyze``; ``export``
(:mod:`.export`); ``audit`` (:mod:`.audit`, the batch case audit); ``gui``
(:mod:`.gui`, the desktop review application).
Lab commands (:mod:`.lab`): ``train``, ``train-detector``, ``train-fpr``, ``calibrate``, ``evaluate``.
Every subcommand has ``--help``.

Errors: a :class:`~lungfuse.pipelines.core.errors.LungFuseError` (bad input or setup) or a missing
file prints one line naming the file and exits with 2.  Anything else is a bug: one line plus the
path of a log holding its traceback, exit code 1.

Research software — NOT FOR DIAGNOSTIC USE.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from lungfuse.app.cli.audit import add_audit_command  # noqa: E402
from lungfuse.app.cli.common import NOTICE  # noqa: E402
from lungfuse.app.cli.export import add_export_command  # noqa: E402
from lungfuse.app.cli.gui import add_gui_command  # noqa: E402
from lungfuse.app.cli.lab import add_lab_commands  # noqa: E402
from lungfuse.app.cli.product import add_product_commands  # noqa: E402

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lungfuse",
        description="LungFuse: chest-CT nodule analysis with report/image fusion. " + NOTICE,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_product_commands(sub)
    add_export_command(sub)
    add_audit_command(sub)
    add_gui_command(sub)
    add_lab_commands(sub)
    return p


def _bug_log(command: str) -> Path:
    """Where a bug's traceback goes: ``$LUNGFUSE_LOG_DIR`` or the cache folder's ``logs/``."""
    import time

    from lungfuse.pipelines.core.resources import cache_dir

    folder = Path(os.environ.get("LUNGFUSE_LOG_DIR") or cache_dir() / "logs")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"lungfuse-{command}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 bad input or setup, 1 a bug)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from lungfuse.pipelines.core.errors import LungFuseError

    try:
        return int(args.func(args) or 0)
    except (LungFuseError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        # one line, whatever the message holds (library errors quoted in it may carry newlines)
        print(f"lungfuse {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lungfuse {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - anything else is a bug: keep its traceback
        import traceback

        text = traceback.format_exc()
        try:
            log = _bug_log(args.command)
            log.write_text(text)
            where = f"traceback in {log}"
        except OSError:
            sys.stderr.write(text)
            where = "traceback above"
        print(f"lungfuse {args.command}: internal error (a bug, please report it): {type(exc).__name__}: "
              f"{' '.join(str(exc).split())} ({where})", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
