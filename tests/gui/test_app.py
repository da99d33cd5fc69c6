"""The review application around the viewer: settings, shortcut sheet, worklist (recent cases,
series chooser, batch audit), drag and drop, the Export menu (pytest-qt, offscreen).

Research software, NOT for diagnostic use.  The analysed LIDC-IDRI-0001 window and its saved
result come from conftest.py (one analysis per session); nothing here analyses a case again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from gui_helpers import wait_until  # noqa: E402
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent, QKeySequence  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from lungfuse.app.gui.main_window import EXPORT_ENTRIES, MainWindow  # noqa: E402
from lungfuse.app.gui.settings import AppSettings, SettingsDialog  # noqa: E402
from lungfuse.app.gui.worklist import audit_cases, read_entry  # noqa: E402
from lungfuse.pipelines.analysis.case import AnalysisSettings  # noqa: E402
from lungfuse.pipelines.analysis.review import FindingReview, Review, review_path  # noqa: E402

SETTINGS = AnalysisSettings(device="cpu", threads=1, max_word_findings=0)


def _window(registry: Any, prefs: AppSettings | None = None) -> MainWindow:
    w = MainWindow(settings=SETTINGS, registry=registry, confirm_close=False, prefs=prefs)
    w.resize(1400, 900)
    w.show()
    return w


def _fresh_prefs(tmp_path: Path) -> AppSettings:
    from PySide6.QtCore import QSettings

    return AppSettings(QSettings(str(tmp_path / "lungfuse.ini"), QSettings.Format.IniFormat))


# -- settings ------------------------------------------------------------------------------------
def test_settings_live_in_the_test_store_and_survive_a_new_window(qapp: Any, registry: Any,
                                                                _temporary_settings: Path) -> None:
    s = AppSettings()
    assert Path(s.q.fileName()).is_relative_to(_temporary_settings)  # never the developer's store
    s.device, s.opacity, s.second_reader = "cpu", 70, False
    s.set_preset("lung", 1200, -500)
    s.sync()
    w = _window(registry)
    try:
        assert w.presets["lung"] == (1200.0, -500.0)
        assert w.overlays.opacity.value() == 70
        assert w.settings.device == "cpu"
        w.overlays.opacity.setValue(30)  # a change in the window is stored at once
        assert AppSettings().opacity == 30
    finally:
        w.close()
        s.set_preset("lung", 1500, -600)
        s.opacity = 45


def test_settings_dialog_writes_on_ok_and_the_window_applies_it(qapp: Any, registry: Any, tmp_path: Path) -> None:
    prefs = _fresh_prefs(tmp_path)
    w = _window(registry, prefs)
    try:
        w.show_settings()
        dlg = w.settings_dialog
        assert isinstance(dlg, SettingsDialog)
        ws, ls = dlg.preset_boxes["mediastinum"]
        ws.setValue(350)
        ls.setValue(50)
        dlg.opacity.setValue(80)
        dlg.device.setCurrentText("cpu")
        dlg.accept()
        assert prefs.presets()["mediastinum"] == (350.0, 50.0) and prefs.opacity == 80
        assert w.presets["mediastinum"] == (350.0, 50.0) and w.overlays.opacity.value() == 80
        assert "W350/L50" in w.preset.itemText(1)
        w.show_settings()
        w.settings_dialog.reject()  # Cancel changes nothing
        assert prefs.presets()["mediastinum"] == (350.0, 50.0)
    finally:
        w.close()


def test_an_edited_preset_changes_the_rendered_window(win: MainWindow, tmp_path: Path) -> None:
    view = win.viewer.views["axial"]
    win.set_preset("lung")
    before = view.render_image().copy()
    saved = win.presets
    try:
        win.presets = {**saved, "lung": (400.0, 40.0)}
        win.set_preset("lung")
        assert view.render_image() != before
    finally:
        win.presets = saved
        win.set_preset("lung")


# -- keyboard ------------------------------------------------------------------------------------
def test_every_menu_action_has_a_unique_shortcut_and_the_sheet_lists_it(win: MainWindow) -> None:
    actions = [a for m in win.menuBar().actions() if m.menu() is not None
               for a in m.menu().actions() if not a.isSeparator()]  # type: ignore[attr-defined]
    assert len(actions) > 30
    keys = [k.toString() for a in actions for k in a.shortcuts()]
    missing = [a.text() for a in actions if not a.shortcuts()]
    assert not missing, f"actions without a shortcut: {missing}"
    assert len(keys) == len(set(keys)), "two actions share a shortcut"
    win.show_shortcuts()
    table = win.shortcut_table
    listed = {(table.item(i, 1).text(), table.item(i, 2).text()) for i in range(table.rowCount())}
    for a in actions:
        shown = " or ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts())
        assert (a.text().replace("&", ""), shown) in listed
    assert any(t == "zoom" for t, _ in listed)  # mouse gestures too
    win.shortcut_sheet.close()


def test_question_mark_opens_the_sheet(win: MainWindow, qtbot: Any) -> None:
    win.raise_()
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
    win.shortcut_sheet = None  # type: ignore[assignment]
    qtbot.keyClick(win.viewer.views["axial"], "?")  # a key typed over the viewer reaches the window's action
    qtbot.waitUntil(lambda: win.shortcut_sheet is not None, timeout=5000)
    assert win.shortcut_sheet.isVisible()
    win.shortcut_sheet.close()


# -- worklist ------------------------------------------------------------------------------------
def test_the_opened_case_is_a_recent_case_with_its_status(win: MainWindow) -> None:
    assert win.result is not None and win.result_path is not None
    assert str(win.result_path.resolve()) in win.prefs.recent()
    e = read_entry(win.result_path)
    probs = [f.malignancy_probability for f in win.result.findings if f.malignancy_probability is not None]
    assert e.status == win.result.status and e.max_malignancy == pytest.approx(max(probs))
    labels = [r[1] for r in win.worklist.rows(win.worklist.recent_root)]
    assert e.status_label in labels


@pytest.fixture(scope="module")
def audit(win: MainWindow, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch audit's layout: summary.csv, cases/<id>/result.json (+ NPZ, review sidecar); one
    case as analysed, one edited to discordant without findings, one unreadable."""
    assert win.result_path is not None
    root = tmp_path_factory.mktemp("audit")
    src = win.result_path
    good = root / "cases" / "LIDC-IDRI-0001"
    good.mkdir(parents=True)
    d = json.loads(src.read_text())
    shutil.copy(src.with_suffix(".npz"), good / "result.npz")
    d["arrays_file"] = "result.npz"
    (good / "result.json").write_text(json.dumps(d))
    f1 = win.result.findings[0]  # type: ignore[union-attr]
    rv = Review(reviewer="tester", analysis_uid=win.result.provenance.analysis_uid,  # type: ignore[union-attr]
                findings=[FindingReview(f1.id, f1.tracking_uid, "accepted")])
    rv.save(review_path(good / "result.json"))
    other = root / "cases" / "CASE-B"
    other.mkdir()
    d2 = {**d, "case_id": "CASE-B", "status": "discordant", "findings": []}
    (other / "result.json").write_text(json.dumps(d2))
    bad = root / "cases" / "CASE-C"
    bad.mkdir()
    (bad / "result.json").write_text("{not json")
    (root / "summary.csv").write_text("case_id,status\nLIDC-IDRI-0001,concordant\nCASE-B,discordant\n")
    staging = root / "cases" / ".staging"  # the audit runner's unpublished work: never listed
    staging.mkdir()
    (staging / "result.json").write_text(json.dumps(d2))
    return root


def test_audit_cases_are_listed_with_their_status(audit: Path, win: MainWindow) -> None:
    rows = {e.label: e for e in audit_cases(audit)}
    assert set(rows) == {"LIDC-IDRI-0001", "CASE-B", "CASE-C"}
    assert rows["LIDC-IDRI-0001"].status == win.result.status  # type: ignore[union-attr]
    assert rows["LIDC-IDRI-0001"].n_decided == 1
    assert rows["CASE-B"].status_label == "discordant" and rows["CASE-B"].max_malignancy is None
    assert rows["CASE-C"].status_label == "unreadable" and "result.json" in (rows["CASE-C"].error or "")


def test_double_click_on_an_audit_case_opens_its_result_and_review(audit: Path, win: MainWindow,
                                                                   registry: Any, tmp_path: Path) -> None:
    w = _window(registry, _fresh_prefs(tmp_path))
    try:
        w.open_audit(str(audit))
        root = w.worklist.audit_root
        assert [r[0] for r in w.worklist.rows(root)] == ["CASE-B", "CASE-C", "LIDC-IDRI-0001"]
        assert w.worklist.rows(root)[1][1] == "unreadable"
        item = next(root.child(i) for i in range(root.childCount()) if root.child(i).text(0) == "LIDC-IDRI-0001")
        w.worklist.tree.itemActivated.emit(item, 0)  # what a double click or Enter does
        wait_until(lambda: w.result is not None or w.last_error is not None, 120)
        assert w.last_error is None, w.last_error
        assert w.result_path == audit / "cases" / "LIDC-IDRI-0001" / "result.json"
        assert w.result.provenance.analysis_uid == win.result.provenance.analysis_uid  # saved, not re-run
        row = w.table.ids().index(win.result.findings[0].id)  # type: ignore[union-attr]
        assert w.table.item(row, 9).text().startswith("accepted")
        assert str(audit.resolve()) in w.prefs.recent()
    finally:
        w.close()


def test_dropping_an_audit_folder_lists_it(audit: Path, registry: Any, tmp_path: Path) -> None:
    w = _window(registry, _fresh_prefs(tmp_path))
    try:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(audit))])
        ev = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                        Qt.KeyboardModifier.NoModifier)
        w.dropEvent(ev)
        assert len(w.worklist.rows(w.worklist.audit_root)) == 3
        assert w.side_tabs.currentWidget() is w.worklist
    finally:
        w.close()


def test_a_broken_result_json_gives_a_dialog_naming_it(audit: Path, registry: Any, tmp_path: Path) -> None:
    w = _window(registry, _fresh_prefs(tmp_path))
    try:
        bad = audit / "cases" / "CASE-C" / "result.json"
        w.open_path(str(bad))
        assert w.last_error is not None and str(bad) in w.last_error
        assert w.error_box is not None and w.error_box.isVisible()
        w.error_box.close()
    finally:
        w.close()


@pytest.fixture(scope="module")
def multi_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder with three stacks: a 24-slice CT, an 8-slice recon and a 3-image localizer (no LIDC data)."""
    import pydicom
    from pydicom.uid import generate_uid

    from lungfuse.pipelines.demo.case import make_demo_case

    root = make_demo_case(tmp_path_factory.mktemp("series"), seed=3, shape=(24, 48, 48), spacing=(5.0, 4.0, 4.0),
                          n_nodules=0).ct_dir
    files = sorted(root.rglob("*.dcm"))
    recon_uid, scout_uid = generate_uid(), generate_uid()
    (root / "recon").mkdir()
    (root / "scout").mkdir()
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if i < 8:
            ds.SeriesInstanceUID, ds.SeriesDescription = recon_uid, "thin recon"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(root / "recon" / f.name)
        if i < 3:
            ds.SeriesInstanceUID, ds.SeriesDescription = scout_uid, "topogram"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.save_as(root / "scout" / f.name)
    return root, recon_uid


def test_series_chooser_defaults_to_the_ct_and_switches(qapp: Any, multi_series: tuple[Path, str], registry: Any,
                                                        tmp_path: Path) -> None:
    folder, recon_uid = multi_series
    w = _window(registry, _fresh_prefs(tmp_path))
    try:
        w.open_case(str(folder), analyse=False, result_path=tmp_path / "r.json")
        wait_until(lambda: (w.volume is not None and not w.busy()) or w.last_error is not None, 60)
        assert w.last_error is None, w.last_error
        assert w.series_box.isVisibleTo(w) and w.series_box.count() >= 2
        texts = [w.series_box.itemText(i) for i in range(w.series_box.count())]
        assert "localizer" not in w.series_box.currentText()
        assert w.volume.shape[0] == 24
        idx = w.series_box.findData(recon_uid)
        assert idx >= 0 and "thin recon: 8 images" in texts[idx]
        w.series_box.setCurrentIndex(idx)
        w.series_box.activated.emit(idx)
        wait_until(lambda: (w.volume is not None and w.volume.shape[0] == 8 and not w.busy())
                   or w.last_error is not None, 60)
        assert w.last_error is None and w.series_uid == recon_uid
        assert w.viewer.sliders["axial"].maximum() == 7
    finally:
        w.close()


# -- export --------------------------------------------------------------------------------------
def test_export_entries_follow_the_formats_this_build_has(win: MainWindow) -> None:
    have = win.available_formats()
    assert {"json", "csv"} <= have
    for label, _key, fmts in EXPORT_ENTRIES:
        a = win.export_actions[label]
        assert a in win.export_menu.actions()  # never missing from the menu
        if set(fmts) <= have:
            assert a.isEnabled(), label
        else:
            assert not a.isEnabled() and "not available in this build" in a.toolTip(), label


def test_json_csv_export_runs_in_a_worker_and_carries_the_review(win: MainWindow, tmp_path: Path) -> None:
    assert win.result is not None
    win.select_finding(win.result.findings[0].id)
    win.review.decide("rejected")
    win.last_export, win.last_error = None, None
    win.export_to(str(tmp_path / "out"), ["json", "csv"])
    wait_until(lambda: win.last_export is not None or win.last_error is not None, 60)
    assert win.last_export is not None, win.last_error
    names = sorted(p.name for v in win.last_export.files.values() for p in v)
    assert any(n.endswith(".json") for n in names) and any(n.endswith(".csv") for n in names)
    csv = next(p for p in win.last_export.files["csv"] if p.suffix == ".csv").read_text()
    assert "rejected" in csv
    win.review.decide("accepted")
    QApplication.processEvents()


def test_pixels_of_the_screenshot_views_are_not_blank(win: MainWindow) -> None:
    from gui_helpers import widget_pixels

    a = widget_pixels(win.viewer.views["sagittal"])
    assert np.std(a) > 10


def test_the_platform_is_the_one_asked_for(qapp: Any) -> None:
    """Offscreen in CI; ``xcb`` under the real X server of test_xvfb.py."""
    import os

    assert QApplication.platformName() == os.environ["QT_QPA_PLATFORM"]


def test_every_export_entry_writes_its_files_from_the_menu_path(win: MainWindow, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each enabled Export entry, triggered as from the menu (the folder dialog answered), writes its formats."""
    from PySide6.QtWidgets import QFileDialog

    have = win.available_formats()
    for label, _key, fmts in EXPORT_ENTRIES:
        if not set(fmts) <= have:
            continue
        out = tmp_path / fmts[0]
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, o=out, **k: str(o))
        win.last_export, win.last_error = None, None
        win.export_actions[label].trigger()
        wait_until(lambda: win.last_export is not None or win.last_error is not None, 120)
        assert win.last_error is None, win.last_error
        assert set(win.last_export.files) == set(fmts), label
        assert all(p.is_file() and p.parent == out for v in win.last_export.files.values() for p in v)


def test_warm_up_loads_the_models_off_the_gui_thread_and_close_waits_for_it(win: MainWindow, registry: Any,
                                                                          tmp_path: Path) -> None:
    w = _window(registry, _fresh_prefs(tmp_path))
    w.warm_up()
    assert w.warmup_worker is not None
    wait_until(lambda: w.warm or w.warmup_worker.isFinished(), 120)
    wait_until(lambda: w.warm, 10)  # the queued ready signal
    assert "models loaded on cpu" in w.models_label.text()
    assert any(dev == "cpu" for _, dev in registry.loaded())
    w.close()
    assert w.warmup_worker.isFinished()


def test_a_folder_with_one_ct_and_its_annotation_seg_shows_no_series_chooser(win: MainWindow) -> None:
    """LIDC-IDRI-0001's folder holds the CT and a SEG of the readers' annotations: only the CT is a choice."""
    from lungfuse.pipelines.io.dicom_series import list_series

    assert win.ct_path is not None
    found = list_series(win.ct_path)
    assert len(found) >= 2 and sum(s.modality == "CT" for s in found) == 1
    assert [s.modality for s in win.series] == ["CT"] and not win.series_box.isVisibleTo(win)


def test_an_export_format_missing_from_the_build_is_greyed_with_a_tooltip(win: MainWindow,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MainWindow, "available_formats", staticmethod(lambda: {"json", "csv"}))
    win._update_export_actions()
    try:
        pdf, dicom, tables = (win.export_actions[label] for label, _k, _f in EXPORT_ENTRIES)
        assert not pdf.isEnabled() and "no pdf writer" in pdf.toolTip()
        assert not dicom.isEnabled() and "no sr, seg, sc writer" in dicom.toolTip()
        assert tables.isEnabled() and pdf in win.export_menu.actions()
    finally:
        monkeypatch.undo()
        win._update_export_actions()
