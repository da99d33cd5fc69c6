"""The review window (pytest-qt, offscreen) on a real CT: LIDC-IDRI-0001, analysed once per session (conftest.py).

Research software, NOT for diagnostic use.  Each check compares rendered pixels or the window's
state before and after an action, so a control that does nothing fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from gui_helpers import wait_until as _wait  # noqa: E402
from gui_helpers import widget_pixels  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from lungfuse.app.gui.main_window import MainWindow  # noqa: E402
from lungfuse.pipelines.analysis.case import AnalysisSettings  # noqa: E402
from lungfuse.pipelines.inference.registry import ModelRegistry  # noqa: E402

# the same settings as conftest's session window (heatmaps on, word occlusion off)
SETTINGS = AnalysisSettings(device="cpu", threads=1, max_word_findings=0)


def _axial_pixels(w: MainWindow) -> np.ndarray:
    """The axial view as drawn on screen (image, boxes, ids, crosshair), as an array."""
    return widget_pixels(w.viewer.views["axial"])


def test_findings_table_fills_and_result_is_saved(win: MainWindow) -> None:
    assert win.result is not None and win.result.findings
    assert win.table.rowCount() == len(win.result.findings)
    assert win.table.ids()[0] == "F1"
    assert win.result_path is not None and win.result_path.is_file()
    assert "NOT FOR DIAGNOSTIC USE" in win.notice_label.text()
    assert "sha256" not in win.models_label.text() and "detector " in win.models_label.text()


def test_clicking_a_row_moves_the_views_to_the_finding(win: MainWindow) -> None:
    assert win.result is not None and win.scene is not None
    far = max(win.result.findings, key=lambda f: abs(f.center_voxel[0] - win.scene.cursor[0]))
    row = win.table.ids().index(far.id)
    before = _axial_pixels(win)
    win.table.selectRow(row)
    QApplication.processEvents()
    assert win.scene.selected == far.id
    assert win.scene.cursor == [int(round(c)) for c in far.center_voxel]
    assert win.viewer.sliders["axial"].value() == win.scene.cursor[0]
    assert not np.array_equal(before, _axial_pixels(win))


def test_window_level_changes_rendered_pixels(win: MainWindow) -> None:
    view = win.viewer.views["axial"]
    win.set_preset("lung")
    lung = view.render_image().copy()
    win.set_preset("bone")
    assert win.scene is not None and win.scene.window == (2000.0, 500.0)
    assert view.render_image() != lung
    win.set_preset("lung")
    assert view.render_image() == lung


def test_mip_slab_changes_rendered_pixels(win: MainWindow) -> None:
    view = win.viewer.views["axial"]
    plain = view.render_image().copy()
    win.slab_mode.setCurrentIndex(1)  # MIP
    mip10 = view.render_image().copy()
    win.slab.setValue(20)
    mip20 = view.render_image().copy()
    win.slab_mode.setCurrentIndex(0)
    win.slab.setValue(10)
    assert mip10 != plain and mip20 != mip10
    assert view.render_image() == plain


@pytest.mark.parametrize("name", ["boxes", "masks", "heat"])
def test_each_overlay_toggles(win: MainWindow, name: str) -> None:
    win.select_finding(win.top_finding_id())
    box = getattr(win.overlays, name)
    before = _axial_pixels(win)
    box.toggle()
    QApplication.processEvents()
    after = _axial_pixels(win)
    box.toggle()
    QApplication.processEvents()
    assert not np.array_equal(before, after), f"toggling {name} changed nothing"
    assert np.array_equal(before, _axial_pixels(win))


def test_cancel_stops_a_running_analysis_and_the_app_stays_usable(win: MainWindow, registry: ModelRegistry,
                                                                  lidc_root: Path, tmp_path: Path) -> None:
    # the image cache off, so that the run has its slow localise stage ahead of it when cancelled
    w = MainWindow(settings=AnalysisSettings(device="cpu", threads=1, cache_image=False), registry=registry,
                   confirm_close=False)
    w.show()
    w.open_case(str(lidc_root / "LIDC-IDRI-0001"), result_path=tmp_path / "c.json", analyse=False)
    _wait(lambda: w.scene is not None and not w.busy())
    stages: list[str] = []
    w.start_analysis()
    assert w.cancel_btn.isEnabled()
    w.worker.progress.connect(lambda s, i, n: (stages.append(s), w.cancel_analysis()))
    t0 = time.monotonic()
    _wait(lambda: not w.busy() and "cancelled" in w.progress.format(), timeout_s=120)
    assert time.monotonic() - t0 < 15, "cancel did not stop the analysis early"
    assert w.result is None and w.last_error is None
    assert "cancelled" in w.progress.format()
    assert stages and "done" not in stages
    assert not (tmp_path / "c.json").exists()
    assert w.analyse_btn.isEnabled() and not w.cancel_btn.isEnabled()
    before = w.viewer.views["axial"].render_image().copy()
    w.set_preset("mediastinum")
    assert w.viewer.views["axial"].render_image() != before
    w.close()


def test_a_non_dicom_folder_gives_an_error_dialog_and_the_app_keeps_running(qapp: Any, tmp_path: Path,
                                                                           registry: ModelRegistry) -> None:
    (tmp_path / "notes.txt").write_text("not a CT")
    w = MainWindow(settings=SETTINGS, registry=registry, confirm_close=False)
    w.show()
    w.open_case(str(tmp_path))
    _wait(lambda: w.last_error is not None and not w.busy(), timeout_s=60)
    assert str(tmp_path) in w.last_error
    assert w.error_box is not None and w.error_box.isVisible()
    assert w.open_btn.isEnabled() and w.isVisible()
    w.error_box.close()
    w.close()


def test_screenshot_writes_a_png_of_the_window(win: MainWindow, tmp_path: Path) -> None:
    """``lungfuse gui --result JSON --screenshot`` (a saved result: no second analysis)."""
    png = tmp_path / "shot.png"
    p = subprocess.run([sys.executable, "-m", "lungfuse.app.cli", "gui", "--result", str(win.result_path),
                        "--select", "F1", "--screenshot", str(png)], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert p.returncode == 0, p.stderr
    from PySide6.QtGui import QImage

    img = QImage(str(png))
    assert img.width() >= 1000 and img.height() >= 600
    a = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes())
    assert a.std() > 20  # not blank: CT, panels and text


def test_the_cli_imports_no_qt() -> None:
    code = ("import sys; from lungfuse.app.cli import build_parser; build_parser(); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('PySide6', 'shiboken6')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


def test_reviewer_edits_are_on_disk_at_once_and_survive_reopening(win: MainWindow, registry: ModelRegistry,
                                                                  lidc_root: Path) -> None:
    from lungfuse.pipelines.analysis.review import Review, review_path

    assert win.result_path is not None and win.scene is not None
    side = review_path(win.result_path)
    win.select_finding("F1")
    win.review.decide("accepted")
    assert Review.load(side).findings[0].decision == "accepted"  # written on the edit, not on close
    win.review.set_category("4A")
    win.review.set_comment("checked on the MIP")
    z, y, x = (float(c) for c in win.scene.cursor)
    win.review.add_btn.click()
    win.viewer.views["axial"].clicked_voxel.emit(z, y, x + 40)  # the reader clicks a missed nodule
    saved = Review.load(side)
    assert (saved.findings[0].category, saved.findings[0].comment) == ("4A", "checked on the MIP")
    assert [r.id for r in saved.added_findings] == ["R1"] and saved.added_findings[0].diameter_mm == 6.0
    assert "R1" in win.table.ids()
    again = MainWindow(settings=SETTINGS, registry=registry, confirm_close=False)
    again.show()
    again.open_case(str(lidc_root / "LIDC-IDRI-0001"), result_path=win.result_path)
    _wait(lambda: again.result is not None or again.last_error is not None, timeout_s=60)
    assert again.result.provenance.analysis_uid == win.result.provenance.analysis_uid  # the saved one, not re-run
    assert "R1" in again.table.ids()
    row = again.table.ids().index("F1")
    assert again.table.item(row, 9).text().startswith("accepted")
    assert again.table.item(row, 7).text() == "4A (reader)"
    again.close()


def test_second_reader_mode_hides_the_ai_marks_until_asked(win: MainWindow) -> None:
    win.select_finding("F1")
    shown = _axial_pixels(win)
    n = win.table.rowCount()
    win.review.second_reader.setChecked(True)
    QApplication.processEvents()
    assert win.table.rowCount() < n and not np.array_equal(shown, _axial_pixels(win))
    win.review.show_ai.click()
    QApplication.processEvents()
    assert win.table.rowCount() == n
    win.review.second_reader.setChecked(False)
