"""``lungfuse gui``: the desktop review application (the Qt code is in :mod:`lungfuse.app.gui`).

Research software — NOT FOR DIAGNOSTIC USE.

This module imports no Qt: :func:`cmd_gui` imports :mod:`lungfuse.app.gui.launch` only when the
command runs (the one import edge ``.importlinter`` lets through from ``app.cli`` to the GUI), so
the rest of the CLI works without PySide6.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from lungfuse.app.cli.common import NOTICE

__all__ = ["add_gui_command"]


def cmd_gui(args: argparse.Namespace) -> int:
    from lungfuse.pipelines.analysis.case import AnalysisSettings
    from lungfuse.pipelines.core.errors import ConfigurationError

    if args.path is None and args.result is None and (args.screenshot or args.no_display):
        raise ConfigurationError("give a CT PATH or --result JSON (or both)")
    import importlib.util

    if importlib.util.find_spec("PySide6") is None:  # find_spec: the CLI itself never imports Qt
        raise ConfigurationError("the GUI needs PySide6: pip install 'lungfuse[gui]'")
    from lungfuse.app.gui.launch import display_available, run_gui, screenshot

    settings = AnalysisSettings(device=args.device, threads=args.threads)
    png = args.screenshot
    headless = not display_available()
    if headless:
        if not args.no_display:
            raise ConfigurationError("no display (DISPLAY / WAYLAND_DISPLAY unset): use --screenshot FILE.png, "
                                     "or set QT_QPA_PLATFORM=offscreen")
        png = png or args.no_display
        print(f"lungfuse gui: no display available, rendering the window offscreen to {png} instead")
    if png:
        if headless:
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        rc, result = screenshot(args.path, png, report=args.report, result=args.result, select=args.select,
                                settings=settings)
        if rc == 0:
            print(f"wrote {png}")
        if rc == 0 and headless and result is not None:
            from lungfuse.app.cli.product import print_result

            print_result(result, profile=True)
        return rc
    return run_gui(args.path, report=args.report, result=args.result, select=args.select, settings=settings)


def add_gui_command(sub: Any) -> None:
    """Add ``gui`` to ``sub`` (argparse sub-parsers)."""
    s = sub.add_parser("gui", help="the desktop review application", description="Open a CT (DICOM folder, NIfTI "
                       "or multi-frame file) in the review window: three synchronised views, the analysis, its "
                       "findings and overlays, the reader's review. " + NOTICE)
    s.add_argument("path", metavar="PATH", nargs="?", help="the CT (default: the one --result names; none: "
                   "the empty window with its worklist)")
    s.add_argument("--report", metavar="FILE", help="the report; default: report.txt beside PATH")
    s.add_argument("--result", metavar="JSON", help="a saved result to show (it is analysed and saved there when "
                   "absent); the review sidecar sits beside it")
    s.add_argument("--screenshot", metavar="FILE.png", help="render the window with the top finding selected to "
                   "FILE.png and exit (offscreen with QT_QPA_PLATFORM=offscreen)")
    s.add_argument("--select", metavar="ID", help="the finding to select (default: the highest malignancy)")
    s.add_argument("--no-display", metavar="FILE.png", help="where no display is available, render offscreen to "
                   "FILE.png and print the analysis summary instead of failing (make run)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    s.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    s.set_defaults(func=cmd_gui)
