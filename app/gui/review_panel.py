"""The reader's review: accept or reject each finding, edit its Lung-RADS category, comment, add
a missed nodule, and second-reader mode.

Research software, NOT for diagnostic use.

Every change is written at once to the result's review sidecar (``review.py``'s
:meth:`Review.save`, atomic: temporary file + ``os.replace``), so nothing is lost if the app is
killed, and the review comes back when the case is reopened.  The machine's result is never
touched.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from lungfuse.pipelines.analysis.review import FindingReview, ReaderFinding, Review, review_path
from lungfuse.pipelines.nlp.claims import LUNG_RADS_CATEGORIES

__all__ = ["ReviewPanel"]


class ReviewPanel(QWidget):
    """Edits ``result.review`` for the selected finding.  ``changed`` after each saved edit;
    ``pick_requested(diameter_mm)`` when the reader wants to click a missed nodule's centre;
    ``ai_visibility(bool)`` in second-reader mode."""

    changed = Signal()
    pick_requested = Signal(float)
    ai_visibility = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: Any = None
        self.result_path: Path | None = None
        self.finding_id: str | None = None
        lay = QVBoxLayout(self)
        self.title = QLabel("no finding selected")
        lay.addWidget(self.title)
        row = QHBoxLayout()
        self.accept_btn = QPushButton("Accept  [A]")
        self.reject_btn = QPushButton("Reject  [R]")
        self.accept_btn.clicked.connect(lambda: self.decide("accepted"))
        self.reject_btn.clicked.connect(lambda: self.decide("rejected"))
        row.addWidget(self.accept_btn)
        row.addWidget(self.reject_btn)
        lay.addLayout(row)
        form = QFormLayout()
        self.category = QComboBox()
        self.category.addItem("machine's category", None)
        for c in LUNG_RADS_CATEGORIES:
            self.category.addItem(f"Lung-RADS {c}", c)
        self.category.activated.connect(lambda _i: self.set_category(self.category.currentData()))
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("comment on this finding (Enter saves)")
        self.comment.editingFinished.connect(lambda: self.set_comment(self.comment.text()))
        form.addRow("category", self.category)
        form.addRow("comment", self.comment)
        lay.addLayout(form)
        add = QHBoxLayout()
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(1.0, 60.0)
        self.diameter.setValue(6.0)
        self.diameter.setSuffix(" mm")
        self.add_btn = QPushButton("Add missed nodule…")
        self.add_btn.setToolTip("then click its centre in any view; the diameter is the one on the left")
        self.add_btn.clicked.connect(lambda: self.pick_requested.emit(float(self.diameter.value())))
        add.addWidget(self.diameter)
        add.addWidget(self.add_btn)
        lay.addLayout(add)
        self.second_reader = QCheckBox("second-reader mode (AI marks hidden until asked)")
        self.show_ai = QPushButton("Show AI marks")
        self.show_ai.setEnabled(False)
        self.second_reader.toggled.connect(self._second_reader)
        self.show_ai.clicked.connect(self._reveal_ai)
        lay.addWidget(self.second_reader)
        lay.addWidget(self.show_ai)
        self.saved = QLabel("")
        self.saved.setWordWrap(True)
        lay.addWidget(self.saved)
        lay.addStretch(1)
        self._enable(False)

    def _enable(self, on: bool) -> None:
        for w in (self.accept_btn, self.reject_btn, self.category, self.comment):
            w.setEnabled(on)
        self.add_btn.setEnabled(self.result is not None)

    def _reveal_ai(self) -> None:
        """Second-reader mode: the first pass is done, show the machine's marks."""
        self.show_ai.setEnabled(False)
        self.ai_visibility.emit(True)

    def _second_reader(self, on: bool) -> None:
        self.show_ai.setEnabled(on)
        self.ai_visibility.emit(not on)

    # -- the review ------------------------------------------------------------------------------
    def set_result(self, result: Any, result_path: Path | None) -> None:
        self.result, self.result_path = result, result_path
        self.finding_id = None
        self._enable(False)
        self.title.setText("select a finding in the table")

    def review(self) -> Review:
        """The result's review, created on first edit (the reader's login name as reviewer)."""
        assert self.result is not None
        if self.result.review is None:
            self.result.review = Review(reviewer=getpass.getuser() or "reader",
                                        analysis_uid=self.result.provenance.analysis_uid)
        return self.result.review

    def show_finding(self, fid: str | None) -> None:
        """Show the review of ``fid`` (a machine finding ``F..`` or the reader's ``R..``)."""
        self.finding_id = fid
        if self.result is None or fid is None or not fid.startswith("F"):
            self._enable(False)
            self.title.setText("select a finding in the table" if fid is None else f"{fid}: the reader's mark")
            return
        self._enable(True)
        entry = self._entry(fid, create=False)
        self.title.setText(f"{fid}: " + (entry.decision if entry and entry.decision else "not decided yet"))
        idx = self.category.findData(entry.category if entry else None)
        self.category.setCurrentIndex(max(idx, 0))
        self.comment.setText(entry.comment if entry else "")

    def _entry(self, fid: str, create: bool) -> FindingReview | None:
        f = self.result.finding(fid)
        rv = self.result.review if not create else self.review()
        if rv is None:
            return None
        entry = rv.for_finding(f)
        if entry is None and create:
            entry = FindingReview(finding_id=fid, tracking_uid=f.tracking_uid)
            rv.findings.append(entry)
        return entry

    def decide(self, decision: str) -> None:
        if self.result is None or not self.finding_id or not self.finding_id.startswith("F"):
            return
        entry = self._entry(self.finding_id, create=True)
        assert entry is not None
        entry.decision = decision
        self._save()
        self.show_finding(self.finding_id)

    def set_category(self, category: str | None) -> None:
        if self.result is None or not self.finding_id or not self.finding_id.startswith("F"):
            return
        entry = self._entry(self.finding_id, create=True)
        assert entry is not None
        entry.category = category
        self._save()

    def set_comment(self, text: str) -> None:
        if self.result is None or not self.finding_id or not self.finding_id.startswith("F"):
            return
        entry = self._entry(self.finding_id, create=False)
        if entry is None and not text:
            return
        entry = entry or self._entry(self.finding_id, create=True)
        assert entry is not None
        if entry.comment != text:
            entry.comment = text
            self._save()

    def add_reader_finding(self, center_lps_mm: list[float], diameter_mm: float) -> str:
        """Add a missed nodule (LPS mm centre, diameter mm); returns its id ``R..``."""
        rv = self.review()
        n = max((int(r.id[1:]) for r in rv.added_findings), default=0) + 1
        rid = f"R{n}"
        rv.added_findings.append(ReaderFinding(rid, [float(c) for c in center_lps_mm], float(diameter_mm)))
        self._save()
        return rid

    def _save(self) -> None:
        """Write the sidecar now (atomic)."""
        if self.result_path is None:
            self.saved.setText("not saved: the result has no file")
            return
        path = self.review().save(review_path(self.result_path))
        self.saved.setText(f"saved {path.name} ({self.review().reviewed_utc})")
        self.changed.emit()
