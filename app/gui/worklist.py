"""The worklist: recently opened cases and the cases of a batch audit, each with its status.

Research software, NOT for diagnostic use.

An entry is a DICOM folder, a NIfTI file, a saved result (``result.json``) or a batch audit's
output folder (``DIR/summary.csv`` and ``DIR/cases/<case_id>/result.json``, each with its
``result.review.json`` sidecar).  The status of a case is read from its saved result (the
GUI's own cache result for a CT opened without one, :func:`main_window.default_result_path`):
``not analysed`` when there is none, else the result's ``status`` (concordant, realigned,
discordant, not assessable) with the highest malignancy probability of its findings and how
many findings the reader has decided.  Only the JSON is read (no arrays), so listing an audit
of a few hundred cases takes well under a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from lungfuse.pipelines.analysis.review import review_path

__all__ = ["CaseEntry", "WorklistPanel", "audit_cases", "entry_kind", "is_audit_dir", "read_entry",
           "STATUS_LABELS"]

#: how the worklist names a result's status (``CaseResult.status``) and the colour it uses
STATUS_LABELS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "concordant": ("concordant", (30, 140, 60)), "realigned": ("realigned", (30, 100, 180)),
    "discordant": ("discordant", (200, 40, 40)), "not_assessable": ("not assessable", (150, 110, 0)),
    "": ("not analysed", (120, 120, 120)), "audit": ("—", (0, 0, 0)),
}


@dataclass(frozen=True)
class CaseEntry:
    """One worklist row.  ``path``: what opening the row opens (a CT path or a result JSON);
    ``kind``: dicom / nifti / result / audit; ``status``: a ``CaseResult.status`` or '' (not
    analysed; ``audit`` for an audit folder); ``max_malignancy``: the highest ``malignancy_probability``
    (0..1) or None."""

    path: str
    kind: str
    label: str
    status: str = ""
    max_malignancy: float | None = None
    n_findings: int = 0
    n_decided: int = 0
    ct_path: str | None = None
    error: str | None = None

    @property
    def status_label(self) -> str:
        if self.error:
            return "unreadable"
        return STATUS_LABELS.get(self.status, (self.status, (0, 0, 0)))[0]


def is_audit_dir(path: str | Path) -> bool:
    """A batch audit's output folder: ``summary.csv`` or ``cases/*/result.json`` inside."""
    p = Path(path)
    return p.is_dir() and ((p / "summary.csv").is_file() or any((p / "cases").glob("*/result.json")))


def entry_kind(path: str | Path) -> str:
    """audit / result / nifti / dicom (a folder or a DICOM file), from the path alone."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "audit" if is_audit_dir(p) else "dicom"
    if name.endswith(".json"):
        return "result"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    return "dicom"


def _summary(json_path: Path) -> dict[str, object]:
    """status, max malignancy, finding and decision counts, case id and CT path of a saved result
    (its JSON and review sidecar only; raises OSError / ValueError for an unreadable file)."""
    d = json.loads(json_path.read_text())
    if not isinstance(d, dict) or "status" not in d:
        raise ValueError("not a LungFuse result (no 'status')")
    probs = [f.get("malignancy_probability") for f in d.get("findings") or []]
    probs = [float(p) for p in probs if isinstance(p, int | float)]
    decided = 0
    side = review_path(json_path)
    if side.is_file():
        try:
            rv = json.loads(side.read_text())
            decided = sum(1 for f in rv.get("findings") or [] if f.get("decision"))
        except (OSError, ValueError):
            decided = 0  # a broken sidecar is reported when the case is opened, not here
    return {"status": str(d.get("status") or ""), "max": max(probs) if probs else None,
            "n": len(d.get("findings") or []), "decided": decided, "case_id": d.get("case_id"),
            "ct_path": (d.get("identifiers") or {}).get("ct_path")}


def read_entry(path: str | Path, cached_result: Callable[[str], Path] | None = None) -> CaseEntry:
    """The worklist row of ``path``.  ``cached_result(ct_path)`` names where the GUI keeps the
    result of a CT opened without one (its status is shown when that file exists)."""
    p = Path(path)
    kind = entry_kind(p)
    label = f"{p.parent.name}/{p.name}"  # 'LIDC-IDRI-0001/ct' says more than 'ct'
    if kind == "audit":
        n = len(audit_cases(p))
        return CaseEntry(str(p), kind, f"{p.name} (batch audit, {n} case{'' if n == 1 else 's'})", status="audit")
    res = p if kind == "result" else (cached_result(str(p)) if cached_result else None)
    if res is None or not res.is_file():
        err = None if p.exists() else "no longer exists"
        return CaseEntry(str(p), kind, label, error=err)
    try:
        s = _summary(res)
    except (OSError, ValueError) as exc:
        return CaseEntry(str(p), kind, label, error=f"{res}: {exc}")
    if kind == "result" and s["case_id"]:
        label = str(s["case_id"])
    return CaseEntry(str(p), kind, label, str(s["status"]), s["max"], int(s["n"]), int(s["decided"]),  # type: ignore[arg-type,call-overload]
                     str(s["ct_path"]) if s["ct_path"] else None)


def audit_cases(audit_dir: str | Path) -> list[CaseEntry]:
    """The cases of a batch audit folder, from ``DIR/cases/*/result.json`` (sorted by case folder)."""
    out = []
    for res in sorted(Path(audit_dir).glob("cases/*/result.json")):
        if res.parent.name.startswith("."):
            continue  # the audit's .staging area: cases not published yet
        e = read_entry(res)
        out.append(CaseEntry(e.path, "result", res.parent.name, e.status, e.max_malignancy, e.n_findings,
                             e.n_decided, e.ct_path, e.error))
    return out


class WorklistPanel(QWidget):
    """Two lists: the recent cases and, once one is opened, a batch audit's cases.  A double
    click (or Enter) emits ``open_requested(path)``; ``audit_requested`` asks for an audit folder."""

    open_requested = Signal(str)
    audit_requested = Signal()

    COLUMNS = ("case", "status", "max malig.", "reviewed", "path")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.audit_dir: Path | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(self.COLUMNS))
        self.tree.setHeaderLabels(list(self.COLUMNS))
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setToolTip("double click (or Enter) opens the case with its saved result and review")
        self.tree.itemActivated.connect(self._activated)
        self.recent_root = QTreeWidgetItem(["Recent cases"])
        self.audit_root = QTreeWidgetItem(["Batch audit (File > Open audit folder)"])
        for root in (self.recent_root, self.audit_root):
            root.setFlags(root.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            f = root.font(0)
            f.setBold(True)
            root.setFont(0, f)
            self.tree.addTopLevelItem(root)
            root.setFirstColumnSpanned(True)
        lay.addWidget(self.tree, 1)
        row = QHBoxLayout()
        audit_btn = QPushButton("Open audit folder…")
        audit_btn.clicked.connect(self.audit_requested)
        row.addWidget(audit_btn)
        self.hint = QLabel("drop a DICOM folder, NIfTI file, result.json or audit folder on the window")
        self.hint.setWordWrap(True)
        row.addWidget(self.hint, 1)
        lay.addLayout(row)

    @staticmethod
    def _item(e: CaseEntry) -> QTreeWidgetItem:
        mal = "—" if e.max_malignancy is None else f"{e.max_malignancy:.2f}"
        rev = f"{e.n_decided}/{e.n_findings}" if e.status and e.kind != "audit" else "—"
        it = QTreeWidgetItem([e.label, e.status_label, mal, rev, e.path])
        it.setData(0, Qt.ItemDataRole.UserRole, e.path)
        colour = STATUS_LABELS.get(e.status, ("", (0, 0, 0)))[1] if not e.error else (150, 150, 150)
        it.setForeground(1, QColor(*colour))
        tip = e.error or (f"CT: {e.ct_path}" if e.ct_path else e.path)
        for c in range(len(WorklistPanel.COLUMNS)):
            it.setToolTip(c, tip)
        return it

    def set_recent(self, entries: list[CaseEntry]) -> None:
        self.recent_root.takeChildren()
        for e in entries:
            self.recent_root.addChild(self._item(e))
        self.recent_root.setExpanded(True)
        self._fit()

    def set_audit(self, audit_dir: str | Path, entries: list[CaseEntry]) -> None:
        self.audit_dir = Path(audit_dir)
        self.audit_root.takeChildren()
        n = len(entries)
        self.audit_root.setText(0, f"Batch audit: {self.audit_dir.name} ({n} case{'' if n == 1 else 's'})")
        for e in entries:
            self.audit_root.addChild(self._item(e))
        self.audit_root.setExpanded(True)
        self._fit()

    def _fit(self) -> None:
        for c in range(len(self.COLUMNS) - 1):
            self.tree.resizeColumnToContents(c)
        # a long case name is elided (its path is in the tooltip), so that status and malignancy stay in view
        self.tree.setColumnWidth(0, min(self.tree.columnWidth(0), 170))

    def rows(self, root: QTreeWidgetItem) -> list[tuple[str, str, str]]:
        """(case, status, max malignancy) of each row under ``root`` (what the reader sees)."""
        kids = [root.child(i) for i in range(root.childCount())]
        return [(k.text(0), k.text(1), k.text(2)) for k in kids if k is not None]

    def _activated(self, item: QTreeWidgetItem, _col: int) -> None:
        path = item.data(0, Qt.ItemDataRole.UserRole)
        if path:
            self.open_requested.emit(str(path))
