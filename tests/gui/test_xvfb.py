"""The window under a real X display: a virtual X server (xvfb-run) and Qt's xcb platform plugin,
the one a Linux desktop uses, instead of the offscreen plugin of the other GUI tests.

Research software, NOT for diagnostic use.  Skips, saying why, where xvfb-run is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

HERE = Path(__file__).resolve().parent


@pytest.mark.slow  # a second pytest process with Qt and torch: ~15-30 s
def test_window_tests_pass_under_xvfb_with_the_xcb_plugin(tmp_path: Path) -> None:
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run not installed (apt package xvfb, make apt): no virtual X display")
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "XDG_CONFIG_HOME": str(tmp_path)}
    # no LIDC data needed: the series chooser on a synthetic 3-series folder (CT drawn in three views), the platform
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, "-m", "pytest", "-q",
           "-p", "no:cacheprovider", str(HERE / "test_app.py"),
           "-k", "series_chooser_defaults or platform_is"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=HERE.parents[1])
    tail = (p.stdout + p.stderr)[-3000:]
    if p.returncode != 0 and "could not connect to display" in tail.lower():
        pytest.skip(f"xvfb-run could not start an X server here: {tail[-300:]}")
    if p.returncode != 0 and "xcb" in tail and "could not load the qt platform plugin" in tail.lower():
        pytest.skip("Qt's xcb plugin cannot load (libxcb-icccm4, libxcb-keysyms1, libxcb-cursor0: make apt)")
    assert p.returncode == 0, tail
    assert "2 passed" in p.stdout, tail
