"""Entry point of the desktop bundle: the review window (``lungfuse gui`` with the same options).

Research software, NOT for diagnostic use.

``--smoke-test FILE.png``: open the empty window, render it to FILE.png, print the seconds from
process start to the window on screen and exit (how ``make package`` and the README measure the
bundle's cold start; no network is needed or used).
"""

from __future__ import annotations

import os
import sys
import time

T0 = time.perf_counter()
# the bundle carries every model file: never ask the network (Hugging Face hub, transformers)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def smoke_test(png: str) -> int:
    from PySide6.QtWidgets import QApplication

    from lungfuse.app.gui.main_window import MainWindow
    from lungfuse.models.text import model_path
    from lungfuse.pipelines.analysis.result import schema
    from lungfuse.pipelines.core.resources import list_weights

    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = MainWindow(confirm_close=False)
    win.resize(1400, 900)
    win.show()
    app.processEvents()
    ok = win.grab().save(png)
    started = time.perf_counter() - T0
    weights = list_weights()
    bad = [w.name for w in weights if not w.verified]
    from lungfuse.pipelines.export import FORMATS

    formats = sorted(win.available_formats())  # the export writers import (reportlab, highdicom) in the bundle
    missing = sorted(set(FORMATS) - set(formats))
    print(f"window shown in {started:.2f} s; weights {len(weights)} (sha256 ok: {not bad}); "
          f"schema {schema().get('title', '?')!r}; text encoder {model_path()}; export formats {formats}"
          + (f" - MISSING {missing}" if missing else ""))
    win.close()
    return 0 if ok and not bad and not missing else 1


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--smoke-test"]:
        return smoke_test(args[1] if len(args) > 1 else "smoke.png")
    from lungfuse.app.cli.main import main as cli_main

    return int(cli_main(["gui", *args]))


if __name__ == "__main__":
    raise SystemExit(main())
