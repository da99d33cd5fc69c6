"""The annotated report PDF (``report.pdf``) of a result, drawn with reportlab.

Research software, NOT for diagnostic use.

Sections, in order: header (patient, study, date; with ``deidentify`` only the pseudonym
``ctx.case_label``, no date), summary (status and its coded reasons in plain words, flags),
findings table (location, long / short / mean axis, volume, texture, malignancy probability
against its operating point, Lung-RADS v2022, the reader's decision, category and comment;
reader-added findings marked), key images (:mod:`.keyimages`), the report text with the matched
claims and their descriptor phrases highlighted, the EAF fusion strategy, the consistency
trajectory as a plot, the review, and provenance (models with versions and SHA-256, analysis UID
and time).  Every page carries "NOT FOR DIAGNOSTIC USE" in its footer.

Everything flows (platypus): long reports and many findings continue on further pages, table
cells wrap their text.  DejaVu Sans (shipped with matplotlib) is embedded so that any character
of a report prints.  The document information (title, author, subject) names only the case
label and LungFuse; its creation date is the export's time, never a study date.  (reportlab's
"invariant" mode is not used: its fixed date, 2000-01-01, is also LIDC-IDRI's de-identified
study date, which the de-identification check rightly refuses to find in the output.)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import numpy as np

from lungfuse.pipelines.analysis.result import NOTICE, CaseResult, Finding
from lungfuse.pipelines.analysis.wording import where
from lungfuse.pipelines.export.api import WRITERS, ExportContext
from lungfuse.pipelines.export.keyimages import KeyImage, render_key_images

if TYPE_CHECKING:
    from reportlab.platypus import Flowable

__all__ = ["REASON_LABELS", "STATUS_TEXT", "report_pdf", "operating_point"]

#: plain words for the reason / flag codes (``codes.ReasonCode``)
REASON_LABELS: dict[str, str] = {
    "side": "Side differs", "lobe": "Lobe differs", "size": "Size differs", "texture": "Texture differs",
    "calcification": "Calcification differs", "benign_wording": "Called benign, image looks malignant",
    "claim_not_found": "Reported nodule not found",
    "low_consistency": "Image and report disagree", "low_detection_score": "Low-confidence match only",
    "negative_report_with_finding": "Negative report, nodule on image", "missed_nodule": "Possibly missed nodule",
    "no_lung_in_view": "No lung in view", "lung_coverage_short": "Lung coverage too short",
    "slices_too_thick": "Slices too thick", "unmentioned_finding": "Finding not in the report",
    "claim_unmatched": "Hedged or group claim unmatched", "claim_attributed": "Claim attributed to nearest finding",
    "report_missing": "No report", "report_empty": "Empty report", "ingest_warning": "CT reading warning",
    "no_lungs": "No lungs segmented", "image_cache": "Image steps reused",
}
STATUS_TEXT: dict[str, tuple[str, str]] = {
    "concordant": ("#1b7f3b", "Concordant: the report and the image agree."),
    "realigned": ("#1f6fb2", "Realigned: the report and the image agree after the realignment loop."),
    "discordant": ("#b22222", "Discordant: the report and the image disagree (reasons below)."),
    "not_assessable": ("#b8860b", "Not assessable: the analysis cannot judge this scan (reasons below)."),
}
_FONT, _BOLD, _MONO = "LFSans", "LFSans-Bold", "LFMono"
#: a reader's comment longer than this is cut in the findings table (a table row cannot span pages)
#: and printed whole under "Reader comments"
_CELL_COMMENT = 160
_HIGHLIGHT = "#fff2a8"   # a claim's mention in the report text
_PHRASE = "#ffd166"      # a descriptor phrase the model read


def _fonts() -> None:
    """Register DejaVu Sans / Mono (matplotlib's own copies: no system font needed) once."""
    import os

    import matplotlib
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if _FONT in pdfmetrics.getRegisteredFontNames():
        return
    ttf = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    pdfmetrics.registerFont(TTFont(_FONT, os.path.join(ttf, "DejaVuSans.ttf")))
    pdfmetrics.registerFont(TTFont(_BOLD, os.path.join(ttf, "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFont(TTFont(_MONO, os.path.join(ttf, "DejaVuSansMono.ttf")))
    addMapping(_FONT, 0, 0, _FONT)
    addMapping(_FONT, 1, 0, _BOLD)
    addMapping(_FONT, 0, 1, _FONT)
    addMapping(_FONT, 1, 1, _BOLD)


def operating_point(result: CaseResult, f: Finding) -> tuple[str, float] | None:
    """The fusion variant that gave ``f.malignancy_probability`` and its val-calibrated decision
    threshold (``models.fusion.decision_thresholds``), None when the result does not record it."""
    thresholds = (result.models.get("fusion") or {}).get("decision_thresholds") or {}
    p = f.malignancy_probability
    if p is None or not thresholds:
        return None
    for variant, value in f.malignancy_by_variant.items():
        if variant in thresholds and abs(float(value) - p) < 1e-9:
            return variant, float(thresholds[variant])
    return None


def _styles() -> dict[str, Any]:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("base", fontName=_FONT, fontSize=9, leading=11.5)
    return {
        "base": base,
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9.2),
        "head": ParagraphStyle("head", parent=base, fontName=_BOLD, fontSize=7.5, leading=9.2, textColor=colors.white),
        "mono": ParagraphStyle("mono", parent=base, fontName=_MONO, fontSize=6.5, leading=8.2),
        "h1": ParagraphStyle("h1", parent=base, fontName=_BOLD, fontSize=15, leading=19, spaceAfter=4),
        "h2": ParagraphStyle("h2", parent=base, fontName=_BOLD, fontSize=11.5, leading=14, spaceBefore=9,
                             spaceAfter=4, textColor=colors.HexColor("#1a3a5a"), keepWithNext=1),
        "report": ParagraphStyle("report", parent=base, fontSize=9, leading=12.5, spaceAfter=2),
        "notice": ParagraphStyle("notice", parent=base, fontName=_BOLD, fontSize=9, textColor=colors.HexColor("#9c2a00")),
    }


def _p(text: str, style: Any) -> Any:
    """A Paragraph of plain ``text`` (escaped: a report's "<" is not markup)."""
    from reportlab.platypus import Paragraph

    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _table(rows: Sequence[Sequence[Any]], widths: Sequence[float], st: dict[str, Any], header: bool = True,
           zebra: bool = True) -> Any:
    """A wrapped table: every cell a Paragraph (text never runs out of its cell), the header
    row repeated on each page it spans."""
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    cells = [[c if not isinstance(c, str) else _p(c, st["head"] if header and i == 0 else st["cell"])
              for c in row] for i, row in enumerate(rows)]
    t = Table(cells, colWidths=list(widths), repeatRows=1 if header else 0)
    style = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#b0b8c0")),
             ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
             ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#1a3a5a")))
    if zebra:
        for i in range(1 if header else 0, len(rows)):
            if i % 2 == 0:
                style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#eef2f6")))
    t.setStyle(TableStyle(style))
    return t


def _header_rows(ctx: ExportContext) -> list[list[str]]:
    """Patient / study rows of the header; de-identified: the pseudonym only, no date."""
    r = ctx.result
    if ctx.deidentify:
        return [["Case", f"{ctx.case_label} (de-identified: patient, study and dates removed)"]]
    ds: Any = None
    try:
        ds = ctx.source.datasets[0] if ctx.source.datasets else None
    except (OSError, ValueError):  # the header can still be printed from the result alone
        ds = None

    def val(keyword: str) -> str:
        return str(ds.get(keyword, "") or "").strip() if ds is not None else ""

    def date(da: str) -> str:
        return f"{da[:4]}-{da[4:6]}-{da[6:8]}" if len(da) == 8 and da.isdigit() else da

    ids = r.identifiers
    rows = [["Patient", (val("PatientName").replace("^", " ").strip() or "name not recorded")
             + f";   ID {val('PatientID') or (ids.patient_id if ids else '') or '-'}"
             + (f";   born {date(val('PatientBirthDate'))}" if val("PatientBirthDate") else "")],
            ["Study", f"{date(val('StudyDate')) or 'date unknown'}"
             + (f";   {val('StudyDescription')}" if val("StudyDescription") else "")
             + (f";   accession {val('AccessionNumber')}" if val("AccessionNumber") else "")],
            ["Study UID", ids.study_instance_uid if ids and ids.study_instance_uid else "-"],
            ["Case", r.case_id]]
    return rows


def _location(f: Finding) -> str:
    return f"{f.side or '?'} / {where(f)}" + (f" (possible: {', '.join(f.lobes_possible)})"
                                              if len(f.lobes_possible) > 1 else "")


def _reason_rows(ctx: ExportContext, items: Sequence[Any]) -> list[list[str]]:
    rows = [["Code", "Severity", "What it means"]]
    for r in items:
        code = r.code.value
        text = r.text[len(code) + 1:].strip() if r.text.startswith(code + ":") else r.text
        rows.append([f"{REASON_LABELS.get(code, code)} ({code})", str(r.severity), ctx.scrub(text)])
    return rows


def _cell_comment(text: str) -> str:
    if len(text) <= _CELL_COMMENT:
        return text
    return text[:_CELL_COMMENT].rsplit(" ", 1)[0] + " ... (in full under Reader comments)"


def _findings_rows(ctx: ExportContext) -> list[list[str]]:
    r = ctx.result
    rv = r.review
    rows = [["ID", "Location (side / lobe)", "Long / short / mean axis (mm)", "Vol. (mm³)", "Texture",
             "Malignancy (operating point)", "Lung-RADS v2022", "Reader decision", "Reader comment"]]
    for f in r.findings:
        fr = rv.for_finding(f) if rv is not None else None
        op = operating_point(r, f)
        if f.malignancy_probability is None:
            mal = "-"
        elif op is None:
            mal = f"{f.malignancy_probability:.2f}"
        else:
            side = "at/above" if f.malignancy_probability >= op[1] else "below"
            mal = f"{f.malignancy_probability:.2f} ({side} {op[1]:.2f}, {op[0]})"
        short = f.short_axis_mm if f.short_axis_mm is not None else f.measurement.get("short_axis_mm")
        axes = f"{f.diameter_mm:.1f} / {short:.1f} / {f.mean_diameter_mm:.1f}" if short is not None \
            else f"{f.diameter_mm:.1f} / - / {f.mean_diameter_mm:.1f}"
        cat = f.lung_rads or "-"
        if fr is not None and fr.category and fr.category != f.lung_rads:
            cat = f"{cat} → {fr.category} (reader)"
        texture = f.texture + (", calcified" if f.calcified else "")
        source = "" if f.source == "detector" else " (realignment)"
        rows.append([f.id + source, _location(f), axes, f"{f.volume_mm3:.0f}", texture, mal, cat,
                     (fr.decision or "not decided") if fr is not None else "not reviewed",
                     _cell_comment(ctx.scrub(fr.comment)) if fr is not None and fr.comment else ""])
    for a in rv.added_findings if rv is not None else []:
        side = "left" if a.center_lps_mm[0] > 0 else "right"  # LPS: +x is the patient's left
        rows.append([f"{a.id} (reader)", f"{side} / (LPS {', '.join(f'{v:.0f}' for v in a.center_lps_mm)} mm)",
                     f"{a.diameter_mm:.1f} / - / -" if a.diameter_mm is not None else "-", "-", "-", "-",
                     f"{a.category} (reader)" if a.category else "-", "added by the reader",
                     _cell_comment(ctx.scrub(a.comment))])
    return rows


def _highlighted_report(ctx: ExportContext, st: dict[str, Any]) -> list[Any]:
    """The report text, one paragraph per line, claims highlighted and labelled with their ids,
    the finding's descriptor phrases in a stronger colour; with ``deidentify`` each piece scrubbed."""
    r = ctx.result
    text = r.report_text or ""
    marks: list[tuple[int, int, str, str]] = []  # start, end, kind, label
    for c in r.claims.nodules if r.claims is not None else []:
        s, e = c.nodule.span
        if e > s:
            matched = next((m.finding_id for m in r.matches if m.claim_id == c.id and m.finding_id), None)
            label = f"{c.id}" + (f"→{matched}" if matched else (" negated" if c.nodule.negated else " unmatched"))
            marks.append((s, e, "claim", label))
    for f in r.findings:
        for ph in f.phrases:
            s, e = (ph.get("report_span") or (0, 0))[:2]
            if e > s:
                marks.append((int(s), int(e), "phrase", ""))
    # boundaries of every mark, and every line break on its own (a claim may run over a line break:
    # each line becomes one paragraph, so no markup may stay open across one)
    breaks = [i for i, ch in enumerate(text) if ch == "\n"]
    cuts = sorted({0, len(text), *[m[0] for m in marks], *[m[1] for m in marks], *breaks, *[i + 1 for i in breaks]})
    ends_label = {m[1]: m[3] for m in marks if m[2] == "claim"}
    html = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        if text[a:b] == "\n":
            html.append("\n")
            continue
        piece = escape(ctx.scrub(text[a:b]))
        in_claim = any(m[0] <= a and b <= m[1] and m[2] == "claim" for m in marks)
        in_phrase = any(m[0] <= a and b <= m[1] and m[2] == "phrase" for m in marks)
        if in_phrase:
            piece = f'<span backColor="{_PHRASE}"><b>{piece}</b></span>'
        elif in_claim:
            piece = f'<span backColor="{_HIGHLIGHT}">{piece}</span>'
        html.append(piece)
        if b in ends_label:
            html.append(f'<font size="6.5" color="#7a5b00"><sup> [{escape(ends_label[b])}]</sup></font>')
    lines = "".join(html).split("\n")
    out = [_paragraph(line or "&nbsp;", st["report"]) for line in lines]
    return out


def _paragraph(markup: str, style: Any) -> Any:
    from reportlab.platypus import Paragraph

    return Paragraph(markup, style)


def _trajectory_png(result: CaseResult) -> bytes:
    """The consistency trajectory: the initial matching's lowest claim-finding consistency, then
    each realignment iteration's candidate consistency (accepted / rejected), against the threshold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    traj = result.consistency_trajectory
    fig = Figure(figsize=(6.2, 2.3), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    thr = float(result.consistency_threshold)
    ax.axhline(thr, color="#b22222", linestyle="--", linewidth=1, label=f"threshold {thr:.2f}")
    its = [int(e.get("iteration", i)) for i, e in enumerate(traj)]
    pts = []  # (iteration, consistency, kind, label)
    for it, e in zip(its, traj, strict=True):
        if it == 0:
            v, kind = e.get("min_consistency"), "initial"
        else:
            v, kind = e.get("consistency"), "accepted" if e.get("accepted") else "rejected"
        if v is not None:
            cand = (e.get("candidate") or {}).get("finding_id")
            pts.append((it, float(v), kind, f"{v:.2f}" + (f" {cand}" if cand and it else "")))
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#9aa7b4", linewidth=1, zorder=1)
    styles = {"initial": ("o", "#1f6fb2", "initial matching: lowest consistency"),
              "accepted": ("o", "#1b7f3b", "realignment candidate, accepted"),
              "rejected": ("X", "#b22222", "realignment candidate, rejected")}
    for kind, (marker, colour, name) in styles.items():
        sel = [p for p in pts if p[2] == kind]
        if sel:
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], marker=marker, color=colour, s=36, zorder=2,
                       label=name)
    for it, v, _, text in pts:
        ax.annotate(text, (it, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    if not pts:
        ax.text(0.5, 0.5, "no claim-finding pair scored (no report claim matched)", transform=ax.transAxes,
                ha="center", va="center", fontsize=8)
    ticks = its or [0]
    ax.set_xlim(-0.5, max(ticks) + 0.5)
    ax.set_xticks(ticks)
    ax.set_xticklabels([("initial" if i == 0 else f"iteration {i}") for i in ticks], fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("consistency (0-1)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)  # never over a point
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _image(png_or_rgb: bytes | np.ndarray, width_pt: float) -> Any:
    """A platypus Image ``width_pt`` wide, aspect kept, from PNG bytes or an RGB array."""
    from PIL import Image as PILImage
    from reportlab.platypus import Image

    if isinstance(png_or_rgb, np.ndarray):
        buf = io.BytesIO()
        PILImage.fromarray(png_or_rgb).save(buf, format="PNG")
        rows, cols = png_or_rgb.shape[:2]
    else:
        buf = io.BytesIO(png_or_rgb)
        cols, rows = PILImage.open(io.BytesIO(png_or_rgb)).size
    buf.seek(0)
    return Image(buf, width=width_pt, height=width_pt * rows / cols)


def _key_image_flowables(ctx: ExportContext, images: list[KeyImage], st: dict[str, Any], width: float) -> list[Any]:
    from reportlab.platypus import KeepTogether, Spacer, Table, TableStyle

    out: list[Any] = []
    by_finding: dict[str, list[KeyImage]] = {}
    for k in images:
        by_finding.setdefault(k.finding_id, []).append(k)
    col = 0.85 * (width - 6) / 2  # three findings (their two views) to a page
    for fid, ims in by_finding.items():
        pics = [_image(k.rgb, col) for k in ims[:2]]
        caps = [_p(f"{k.view}, source {'slice' if k.view == 'axial' else 'row'} {k.slice_index + 1}; "
                   f"pixel {k.pixel_spacing_mm[0]:.2f} mm, field {k.fov_mm:.0f} mm", st["small"]) for k in ims[:2]]
        t = Table([pics, caps], colWidths=[col + 3] * len(pics), hAlign="LEFT")
        t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                               ("RIGHTPADDING", (0, 0), (-1, -1), 3)]))
        title = f"{fid}" + (" (reader-added)" if ims[0].reader_added else "")
        out.append(KeepTogether([_p(title, st["base"]), t, Spacer(1, 6)]))
    return out


def _eaf_rows(result: CaseResult) -> list[list[str]]:
    rows = [["Finding", "Strategy", "Weights image / text", "Report used", "Environment"]]
    for f in result.findings:
        e = f.eaf or {}
        w = e.get("weights") or {}
        env = e.get("environment") or {}
        env_txt = ", ".join(f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                            for k, v in env.items())
        rows.append([f.id, str(e.get("strategy", "-")),
                     f"{w.get('image', float('nan')):.2f} / {w.get('text', float('nan')):.2f}" if w else "-",
                     "yes" if e.get("report_used") else "no", env_txt or "-"])
    return rows


def _model_rows(result: CaseResult) -> list[list[Any]]:
    rows: list[list[Any]] = [["Model", "Name / version", "File", "SHA-256"]]
    for key, m in result.models.items():
        if not isinstance(m, dict):
            continue
        name = str(m.get("name") or m.get("package") or key)
        if m.get("version") is not None:
            name += f", version {m['version']}"
        if m.get("steps") is not None:
            name += f", {m['steps']} steps"
        digest = str(m.get("sha256", "-"))
        # groups of 16 hex digits: the digest wraps inside its cell instead of running out of it
        rows.append([key, name, str(m.get("file", "-")), " ".join(digest[i:i + 16] for i in range(0, len(digest), 16))])
    return rows


def _footer(label: str) -> Any:
    def draw(canvas: Any, doc: Any) -> None:
        from reportlab.lib import colors

        canvas.saveState()
        w, _ = doc.pagesize
        canvas.setStrokeColor(colors.HexColor("#9c2a00"))
        canvas.setLineWidth(0.6)
        canvas.line(doc.leftMargin, 14 * 2.8346, w - doc.rightMargin, 14 * 2.8346)
        canvas.setFont(_BOLD, 7.5)
        canvas.setFillColor(colors.HexColor("#9c2a00"))
        canvas.drawString(doc.leftMargin, 10 * 2.8346, NOTICE)
        canvas.setFont(_FONT, 7.5)
        canvas.setFillColor(colors.black)
        canvas.drawRightString(w - doc.rightMargin, 10 * 2.8346, f"{label} - page {doc.page}")
        canvas.restoreState()

    return draw


def report_pdf(ctx: ExportContext) -> bytes:
    """The annotated report PDF of ``ctx.result`` (see the module docstring), as bytes."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, SimpleDocTemplate, Spacer

    _fonts()
    st = _styles()
    r = ctx.result
    label = ctx.case_label
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=14 * mm,
                            bottomMargin=20 * mm, title=f"LungFuse report {label}", author="LungFuse",
                            subject="LungFuse analysis report - NOT FOR DIAGNOSTIC USE", creator="LungFuse",
                            producer="LungFuse (reportlab)", keywords="")
    width = doc.width
    story: list[Flowable] = [
        _p("LungFuse analysis report", st["h1"]),
        _p(NOTICE + " Research software; every value below needs a qualified reader's review.", st["notice"]),
        Spacer(1, 5),
        _table(_header_rows(ctx), (28 * mm, width - 28 * mm), st, header=False, zebra=False),
    ]
    # summary
    colour, sentence = STATUS_TEXT.get(r.status, ("#333333", r.status))
    story += [_p("Summary", st["h2"]),
              _paragraph(f'<font color="{colour}"><b>Status: {escape(r.status.replace("_", " "))}</b></font> - '
                         f"{escape(sentence)}", st["base"])]
    if not r.report_present:
        story.append(_p("No report was given: image-only analysis, consistency not assessed.", st["base"]))
    if r.reasons:
        story += [Spacer(1, 3), _p("Reasons", st["base"]),
                  _table(_reason_rows(ctx, r.reasons), (48 * mm, 20 * mm, width - 68 * mm), st)]
    if r.flags:
        story += [Spacer(1, 3), _p("Flags (worth a look; they do not make the case discordant)", st["base"]),
                  _table(_reason_rows(ctx, r.flags), (48 * mm, 20 * mm, width - 68 * mm), st)]
    # findings
    story += [_p("Findings", st["h2"])]
    rows = _findings_rows(ctx)
    if len(rows) > 1:
        story.append(_table(rows, [w * mm for w in (15, 26, 20, 13, 20, 24, 19, 17)]
                            + [width - 154 * mm], st))
        thr = next((op for op in (operating_point(r, f) for f in r.findings) if op is not None), None)
        story.append(_p("Axes: Lung-RADS v2022 long axis and the largest perpendicular, on the axial slice of largest "
                        "area; mean = their mean. Malignancy: the fusion model's probability"
                        + (f"; operating point {thr[1]:.2f} (the val-calibrated decision threshold of the "
                           f"'{thr[0]}' variant)" if thr else "")
                        + ". Lung-RADS: the machine's category; an arrow shows the reader's edit.", st["small"]))
    else:
        story.append(_p("No finding above the detection threshold.", st["base"]))
    # key images
    images = render_key_images(ctx) if (r.findings or (r.review and r.review.added_findings)) else []
    if images:
        story += [PageBreak(), _p("Key images", st["h2"]),
                  _p("Axial slice and coronal row through each finding's centre, lung window W1500/L-600, "
                     "the patient's right on the image's left. Green: the nodule mask's outline; colour: the heatmap "
                     "named by the colour bar; dashed cyan: a reader-added finding.", st["small"]), Spacer(1, 4)]
        story += _key_image_flowables(ctx, images, st, width)
    # report text
    story.append(_p("Report text", st["h2"]))
    if r.report_text:
        story.append(_paragraph(f'<span backColor="{_HIGHLIGHT}">nodule mention [claim id→finding id]</span>  '
                                f'<span backColor="{_PHRASE}"><b>descriptor phrase read by the model</b></span>'
                                + ("  (de-identified: names, IDs and dates removed)" if ctx.deidentify else ""),
                                st["small"]))
        story.append(Spacer(1, 3))
        story += _highlighted_report(ctx, st)
    else:
        story.append(_p("No report text.", st["base"]))
    # EAF and the consistency trajectory
    eaf = r.eaf or {}
    story += [_p("Fusion (EAF) and consistency", st["h2"]),
              _p(f"Case-level strategy: {eaf.get('strategy', '-')}"
                 + (f" (finding {eaf['finding_id']})" if eaf.get("finding_id") else "")
                 + ". EAF chooses how the image and the report are combined from the scan quality, the detection "
                   "confidence and the report's completeness.", st["base"]), Spacer(1, 3)]
    if r.findings:
        story.append(_table(_eaf_rows(r), (14 * mm, 22 * mm, 26 * mm, 17 * mm, width - 79 * mm), st))
    if not r.report_present:
        story.append(_p("No report: image and report consistency not assessed (no trajectory).", st["base"]))
    else:
        story += [Spacer(1, 4), _image(_trajectory_png(r), width * 0.8),
                  _p(f"Consistency trajectory: the initial matching's lowest claim-finding consistency, then the "
                     f"consistency of each realignment iteration's candidate (labelled with its finding id; a candidate "
                     f"is accepted only if the rules and its detector score agree too). Below the threshold "
                     f"{r.consistency_threshold:.2f} a pair is discordant.", st["small"])]
    for e in r.consistency_trajectory[1:]:
        story.append(_p(f"iteration {e.get('iteration')}: {e.get('region', '')} - {e.get('changed', '')} -> "
                        f"{'accepted' if e.get('accepted') else 'rejected'}", st["small"]))
    # review
    rv = r.review
    story.append(_p("Review", st["h2"]))
    if rv is None:
        story.append(_p("Not reviewed.", st["base"]))
    else:
        who = "(removed: de-identified)" if ctx.deidentify else rv.reviewer
        when = "" if ctx.deidentify or not rv.reviewed_utc else f" on {rv.reviewed_utc}"
        story.append(_p(f"Reviewed by {who}{when}."
                        + (" The review was made on another analysis of this CT." if rv.stale(r.provenance.analysis_uid)
                           else ""), st["base"]))
        if rv.comment:
            story.append(_p(f"Comment: {ctx.scrub(rv.comment)}", st["base"]))
        long = [(f.id, fr.comment) for f in r.findings if (fr := rv.for_finding(f)) is not None
                and len(ctx.scrub(fr.comment)) > _CELL_COMMENT]
        long += [(a.id, a.comment) for a in rv.added_findings if len(ctx.scrub(a.comment)) > _CELL_COMMENT]
        if long:
            story.append(_p("Reader comments", st["base"]))
            story += [_p(f"{fid}: {ctx.scrub(text)}", st["small"]) for fid, text in long]
    # provenance
    pv = r.provenance
    prov = [["Analysis UID", pv.analysis_uid or "-"],
            ["Analysis time (UTC)", "(removed: de-identified)" if ctx.deidentify else (pv.created_utc or "-")],
            ["LungFuse version", pv.lungfuse_version or "-"], ["Device", r.device],
            ["Input fingerprint (SHA-256)", pv.input_fingerprint or "-"]]
    story += [_p("Provenance", st["h2"]),
              _table([[a, _p(b, st["mono"])] for a, b in prov], (42 * mm, width - 42 * mm), st, header=False),
              Spacer(1, 4)]
    mrows = _model_rows(r)
    story.append(_table([mrows[0]] + [[a, b, c, _p(d, st["mono"])] for a, b, c, d in mrows[1:]],
                        (22 * mm, 52 * mm, 22 * mm, width - 96 * mm), st))
    doc.build(story, onFirstPage=_footer(label), onLaterPages=_footer(label))
    return buf.getvalue()


def _write_pdf(ctx: ExportContext) -> list[tuple[str, bytes]]:
    return [("report.pdf", report_pdf(ctx))]


WRITERS["pdf"] = _write_pdf
