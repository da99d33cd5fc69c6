"""GUI tests run offscreen (set before Qt is first imported) with their own settings store.

The window keeps its settings with QSettings (INI, user scope: ``app/gui/settings.py``); the
tests must neither read nor change the developer's, so the store goes to a temporary folder:
``QSettings.setPath`` for this process and ``XDG_CONFIG_HOME`` for the ``lungfuse gui``
subprocesses some tests start.
"""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
_CONFIG = tempfile.mkdtemp(prefix="lungfuse-gui-settings-")
os.environ["XDG_CONFIG_HOME"] = _CONFIG


@pytest.fixture(scope="session", autouse=True)
def _temporary_settings() -> Iterator[Path]:
    try:
        from PySide6.QtCore import QSettings, QStandardPaths
    except ImportError:  # the tests skip themselves without PySide6
        yield Path(_CONFIG)
        return
    QStandardPaths.setTestModeEnabled(True)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, _CONFIG)
    yield Path(_CONFIG)


@pytest.fixture(scope="session")
def registry():  # type: ignore[no-untyped-def]
    """One model registry for every window of the session, like the app's session."""
    pytest.importorskip("PySide6")
    from lungfuse.pipelines.inference.registry import ModelRegistry

    return ModelRegistry()


@pytest.fixture(scope="session")
def win(qapp, lidc_root: Path, registry, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """LIDC-IDRI-0001 opened and analysed in the worker (no report beside it: image only), once
    per session: every GUI test file shares this window and its saved result."""
    pytest.importorskip("pytestqt")
    from gui_helpers import wait_until

    from lungfuse.app.gui.main_window import MainWindow
    from lungfuse.pipelines.analysis.case import AnalysisSettings

    # heatmaps on (the overlay test needs one), word occlusion off: it is not shown by these tests
    settings = AnalysisSettings(device="cpu", threads=1, max_word_findings=0)
    w = MainWindow(settings=settings, registry=registry, confirm_close=False)
    w.resize(1400, 900)
    w.show()
    out = tmp_path_factory.mktemp("gui") / "r0001.json"
    w.open_case(str(lidc_root / "LIDC-IDRI-0001"), result_path=out)
    wait_until(lambda: w.scene is not None)
    assert w.result is None  # the CT is shown before the analysis is done
    wait_until(lambda: w.result is not None or w.last_error is not None)
    assert w.last_error is None, w.last_error
    yield w
    w.close()
