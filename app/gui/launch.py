"""Starting the GUI: ``lungfuse gui`` (interactive), ``--screenshot`` (offscreen PNG) and the
no-display fallback of ``make run``.

Research software, NOT for diagnostic use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["display_available", "run_gui", "screenshot"]


def display_available() -> bool:
    """True when Qt can open a window: a DISPLAY / WAYLAND_DISPLAY, or an explicit platform
    plugin (``QT_QPA_PLATFORM`` offscreen, vnc, ...), or a non-Linux desktop."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _app() -> Any:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    return app if app is not None else QApplication(sys.argv[:1])


def screenshot(path: str | None, out_png: str | Path, *, report: str | None = None, result: str | None = None,
               select: str | None = None, settings: Any = None, size: tuple[int, int] = (1600, 1000),
               timeout_s: float = 900.0) -> tuple[int, Any]:
    """Open the case, analyse it (or load ``result``), select the top finding (or ``select``),
    render the real window to ``out_png`` and return ``(exit status, CaseResult or None)``.
    Must run with a platform that needs no screen (``QT_QPA_PLATFORM=offscreen``) or a display."""
    from PySide6.QtCore import QTimer

    from lungfuse.app.gui.main_window import MainWindow

    app = _app()
    win = MainWindow(settings=settings, confirm_close=False)
    win.resize(*size)
    win.show()
    state: dict[str, Any] = {"rc": 1}

    def done() -> None:
        if select:
            win.select_finding(select)
        if win.result is not None and win.result.report_present:
            win.side_tabs.setCurrentWidget(win.report_panel)  # the picture shows the report and its claims
        app.processEvents()
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        state["rc"] = 0 if win.grab().save(str(out)) else 1
        app.quit()

    def failed(msg: str) -> None:
        print(f"lungfuse gui: error: {msg}", file=sys.stderr)
        state["rc"] = 2
        app.quit()

    win.result_ready.connect(lambda: QTimer.singleShot(50, done))
    win.failed.connect(failed)
    win.analysis_cancelled.connect(lambda: failed("analysis cancelled"))
    QTimer.singleShot(int(timeout_s * 1000), lambda: failed(f"no result within {timeout_s:.0f} s"))
    if path is None and result is not None:
        QTimer.singleShot(0, lambda: win.open_result(result))
    else:
        QTimer.singleShot(0, lambda: win.open_case(str(path), report=report, result_path=result))
    app.exec()
    win.stop_worker()
    res = win.result
    win.close()
    return int(state["rc"]), res


def run_gui(path: str | None, *, report: str | None = None, result: str | None = None, select: str | None = None,
            settings: Any = None) -> int:
    """The interactive window; returns the exit status of the Qt event loop."""
    from PySide6.QtCore import QTimer

    from lungfuse.app.gui.main_window import MainWindow

    app = _app()
    win = MainWindow(settings=settings)
    win.resize(1600, 1000)
    win.show()
    # the models load in the background while the reader chooses a case, so that their imports (which
    # hold the GIL) do not stall the window during the analysis; with a case to open, the CT is shown first
    if path is None and result is None:
        win.warm_up()
    else:
        win.case_loaded.connect(win.warm_up)
    if select:
        win.result_ready.connect(lambda: win.select_finding(select))
    if path is not None:
        QTimer.singleShot(0, lambda: win.open_case(path, report=report, result_path=result))
    elif result is not None:
        QTimer.singleShot(0, lambda: win.open_result(result))
    return int(app.exec())
