"""The report panel and the analysis panel: what the result says about the report and the verdict.

Research software, NOT for diagnostic use.

Report: the report text with each claimed nodule phrase highlighted (a link to its matched
finding) and the word attributions as a background heat (red raises, blue lowers the
malignancy estimate), then the parsed claims.  Analysis: the EAF strategy and modality
weights, the consistency over the realignment iterations (matplotlib canvas), the coded
reasons and flags with their sentences, and the Lung-RADS / Fleischner guidance, labelled as
guidance.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QTextBrowser, QVBoxLayout, QWidget

__all__ = ["ReportPanel", "AnalysisPanel", "report_html"]


def report_html(result: Any) -> str:
    """The report as HTML: claim spans as links ``claim:C..``, word attributions as background."""
    text = result.report_text or ""
    if not text:
        return "<p><i>no report: image-only analysis</i></p>"
    claims = list(result.claims.nodules) if result.claims is not None else []
    words: list[dict[str, Any]] = next((f.word_attributions for f in result.findings if f.word_attributions), [])
    top = max((abs(float(w["score"])) for w in words), default=0.0) or 1.0
    heat = [0.0] * len(text)
    for w in words:
        for i in range(int(w["start"]), min(int(w["end"]), len(text))):
            heat[i] = float(w["score"]) / top
    owner: list[str | None] = [None] * len(text)
    for c in claims:
        a, b = c.nodule.span
        for i in range(max(a, 0), min(b, len(text))):
            owner[i] = c.id
    out: list[str] = []
    i = 0
    while i < len(text):  # runs of equal (claim, heat) become one span
        j = i + 1
        while j < len(text) and owner[j] == owner[i] and heat[j] == heat[i] and text[j] != "\n":
            j += 1
        chunk = html.escape(text[i:j]).replace("\n", "<br>")
        h = heat[i]
        style = ""
        if abs(h) > 0.05:
            rgb = (255, int(255 * (1 - abs(h) * 0.7)), int(255 * (1 - abs(h) * 0.7))) if h > 0 else \
                (int(255 * (1 - abs(h) * 0.7)), int(255 * (1 - abs(h) * 0.7)), 255)
            style = f"background-color: rgb{rgb};"
        if owner[i] is not None:
            chunk = (f'<a href="claim:{owner[i]}" style="color:#004aa0; text-decoration: underline; '
                     f'font-weight: bold; {style}">{chunk}</a>')
        elif style:
            chunk = f'<span style="{style}">{chunk}</span>'
        out.append(chunk)
        i = j
    legend = ("<p><small>underlined: claimed nodule phrases (click: go to the matched finding); background: word "
              "attribution, red raises and blue lowers the malignancy estimate</small></p>")
    rows = []
    for c in claims:
        n = c.nodule
        m = next((m for m in result.matches if m.claim_id == c.id), None)
        to = "negated" if n.negated else (m.finding_id or "no match") if m else "—"
        size = "—" if n.size_mm is None else f"{n.size_mm:g} mm"
        rows.append(f"<tr><td>{c.id}</td><td>{size}</td><td>{n.side or '—'}</td><td>{n.lobe or '—'}</td>"
                    f"<td>{n.texture or '—'}</td><td>{html.escape(str(to))}</td></tr>")
    table = ("<h4>Parsed claims</h4><table border=1 cellspacing=0 cellpadding=2><tr><th>id</th><th>size</th>"
             "<th>side</th><th>lobe</th><th>texture</th><th>finding</th></tr>" + "".join(rows) + "</table>")
    return legend + "<p>" + "".join(out) + "</p>" + table


class ReportPanel(QTextBrowser):
    """The report; ``finding_clicked(id)`` when a claimed phrase with a matched finding is clicked."""

    finding_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: Any = None
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._clicked)
        self.setHtml("<i>no result yet</i>")

    def set_result(self, result: Any) -> None:
        self.result = result
        self.setHtml(report_html(result))

    def _clicked(self, url: QUrl) -> None:
        cid = url.toString().removeprefix("claim:")
        if self.result is None:
            return
        m = next((m for m in self.result.matches if m.claim_id == cid and m.finding_id), None)
        if m is not None:
            self.finding_clicked.emit(m.finding_id)


class AnalysisPanel(QWidget):
    """EAF, trajectory canvas, reasons and guidance of the result."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        lay = QVBoxLayout(self)
        self.text = QTextBrowser()
        self.figure = Figure(figsize=(3.2, 1.8), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        lay.addWidget(self.canvas)
        lay.addWidget(self.text, 1)
        self._plotted: Any = None  # the result the trajectory was drawn for
        self._draw_pending = False

    def set_result(self, result: Any, finding_id: str | None = None) -> None:
        # the plot is the result's, not the finding's: drawn once per result (0.2 s of matplotlib
        # layout on the GUI thread, which was the worst stall after an analysis, bench_gui.py)
        # ... and only when the tab is shown (building the axes alone is 65 ms)
        if result is not self._plotted:
            self._plotted = result
            if self.isVisible():
                self._trajectory(result)
            else:
                self._draw_pending = True
        parts = []
        e = result.eaf or {}
        w = e.get("weights") or {}
        parts.append(f"<h4>Fusion (EAF) for {e.get('finding_id') or 'the case'}</h4><p>strategy <b>"
                     f"{html.escape(str(e.get('strategy', '—')))}</b>; weights image {w.get('image', 0):.2f}, "
                     f"text {w.get('text', 0):.2f}</p>")
        parts.append(f"<h4>Status: {html.escape(result.status)}</h4>")
        items = [(r, "reason") for r in result.reasons] + [(f, "flag") for f in result.flags]
        if items:
            parts.append("<ul>" + "".join(f"<li><b>{html.escape(r.code.value)}</b> ({html.escape(str(r.severity))}, "
                                          f"{kind}): {html.escape(r.text)}</li>" for r, kind in items) + "</ul>")
        f = next((f for f in result.findings if f.id == finding_id), None)
        if f is not None and f.guidance:
            g = f.guidance
            lr, fl = g.get("lung_rads") or {}, g.get("fleischner") or {}
            parts.append(f"<h4>Guidance for {f.id} (guidance only, not a diagnosis)</h4>"
                         f"<p><b>{html.escape(str(lr.get('version', 'Lung-RADS')))}: {html.escape(str(lr.get('category')))}"
                         f"</b> {html.escape(str(lr.get('descriptor', '')))}. {html.escape(str(lr.get('management', '')))}</p>"
                         f"<p><b>{html.escape(str(fl.get('version', 'Fleischner')))}</b>: "
                         f"{html.escape(str(fl.get('recommendation', '—')))} <small>"
                         f"({html.escape(str(fl.get('applies_to', '')))})</small></p>")
        self.text.setHtml("".join(parts))

    def _trajectory(self, result: Any) -> None:
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        traj = result.consistency_trajectory or []
        xs = [int(t.get("iteration", i)) for i, t in enumerate(traj)]
        ys = [t.get("min_consistency") for t in traj]
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        ax.axhline(result.consistency_threshold, color="red", linestyle="--", linewidth=1, label="threshold")
        ax.set_xlabel("realignment iteration", fontsize=8)
        ax.set_ylabel("min. consistency", fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="lower right")
        if not pts:
            ax.text(0.5, 0.5, "no claim matched (no report?)", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8)
        self.canvas.draw_idle()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self._draw_pending and self._plotted is not None:
            self._draw_pending = False
            self._trajectory(self._plotted)
