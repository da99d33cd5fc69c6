"""Entry point of the desktop bundle: the review window (``lungfuse gui`` with the same options).

Research software, NOT for diagnostic use.

``--smoke-test FILE.png [RESULT.json OUT_DIR]``: open the empty window, render it to FILE.png,
print the seconds from process start to the window on screen, check the weights, schema, text
encoder and export writers are inside, and exit (how ``make package`` and the README measure the
bundle's cold start; no network is needed or used); with a saved result, also write every export
format of it to OUT_DIR.
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
    if len(sys.argv) > 4:  # --smoke-test PNG RESULT_JSON OUT_DIR: every export of a saved result, frozen
        from lungfuse.pipelines.analysis.result import CaseResult
        from lungfuse.pipelines.export import export_case

        t0 = time.perf_counter()
        res = export_case(CaseResult.load(sys.argv[3]), sys.argv[4], formats)
        n = {f: len(v) for f, v in res.files.items()}
        print(f"exported {n} to {sys.argv[4]} in {time.perf_counter() - t0:.1f} s")
    return 0 if ok and not bad and not missing else 1


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--smoke-test"]:
        return smoke_test(args[1] if len(args) > 1 else "smoke.png")
    from lungfuse.app.cli.main import main as cli_main

    return int(cli_main(["gui", *args]))


if __name__ == "__main__":
    raise SystemExit(main())
