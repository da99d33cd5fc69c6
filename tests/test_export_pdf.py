"""The annotated PDF, key images, free-text de-identification and ``lungfuse export`` (issue 23).

One analysis of LIDC-IDRI-0001 (module-scoped, one thread), on a copy of the CT into which a
patient name, ID, birth date and accession number were written with pydicom, with a report that
names the patient: every test below exports that one result (with a reader's review).
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from lungfuse.pipelines.analysis.result import CaseResult
from lungfuse.pipelines.analysis.review import FindingReview, ReaderFinding, Review
from lungfuse.pipelines.export import api
from lungfuse.pipelines.export.api import ExportContext, export_case
from lungfuse.pipelines.export.deid_text import Identity, scrub_text
from lungfuse.pipelines.export.keyimages import render_key_images
from lungfuse.pipelines.export.source import ExportError

NAME = ("TESTPERSON", "JANE")
PATIENT_ID = "PID-5566-77"
BIRTH = "19560314"
ACCESSION = "ACC4471XZ"
REPORT = ("Patient: Jane Testperson, MRN PID-5566-77, born 03/14/1956, accession ACC4471XZ.\n"
          "Exam of 2000-01-01, compared with January 1st, 2000.\n"
          # the name and a date inside the claim's own sentence: they reach the claim text, the word
          # attributions and any reason quoting the claim, all of which the exports must scrub too
          "FINDINGS: In Jane Testperson there is a 33 mm spiculated solid non-calcified mass in the left lung, "
          "unchanged since 01.01.2000.\n"
          "IMPRESSION: Left lung mass, suspicious. Discussed with Mrs Testperson on 01.01.2000.")


def _pdftotext(pdf: Path, *opts: str) -> str:
    """The PDF's text; ``opts`` e.g. ``-raw`` (content-stream order: a table cell's lines stay together)."""
    return subprocess.run(["pdftotext", *(opts or ("-layout",)), str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout


def _pages(pdf: Path) -> list[str]:
    """The text of each page (pdftotext separates pages by form feeds)."""
    return [p for p in _pdftotext(pdf).split("\f") if p.strip()]


@pytest.fixture(scope="module")
def case(lidc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CaseResult]:
    """A copy of LIDC-IDRI-0001 that names its patient, analysed once with a reader's review."""
    from lungfuse.pipelines.analysis.analyze import analyze_case
    from lungfuse.pipelines.analysis.case import AnalysisSettings, Case
    from lungfuse.pipelines.inference.registry import ModelRegistry

    ct = tmp_path_factory.mktemp("named") / "ct"
    ct.mkdir()
    for f in sorted((lidc_root / "LIDC-IDRI-0001" / "ct").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PatientName = "^".join(NAME)
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = BIRTH
        ds.AccessionNumber = ACCESSION
        ds.save_as(ct / f.name)
    result = analyze_case(Case(ct, report=REPORT, find_report=False), AnalysisSettings(device="cpu", threads=1),
                          models=ModelRegistry())
    assert [f.id for f in result.findings][:1] == ["F1"], "LIDC-IDRI-0001's mass should be found"
    f1 = result.findings[0]
    others = result.findings[1:]
    reviews = [FindingReview(f1.id, f1.tracking_uid, "accepted", "4B", "agree: spiculated mass, left upper lobe")]
    if others:
        reviews.append(FindingReview(others[0].id, others[0].tracking_uid, "rejected", None,
                                     "vessel, not a nodule (Jane Testperson)"))
    # a reader-added finding 15 mm above F1 (LPS z up = superior), inside the scan
    added = ReaderFinding("R1", [f1.center_lps_mm[0], f1.center_lps_mm[1], f1.center_lps_mm[2] + 15.0], 6.0, "3",
                          "small nodule the machine missed")
    result.review = Review("Dr Reader", analysis_uid=result.provenance.analysis_uid, findings=reviews,
                           added_findings=[added], comment="reviewed on 2001-02-03")
    return ct, result


@pytest.fixture(scope="module")
def plain_export(case: tuple[Path, CaseResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, result = case
    out = tmp_path_factory.mktemp("plain")
    res = export_case(result, out, "pdf,json,csv")
    assert sorted(p.name for p in res.all_files) == ["findings.csv", "report.pdf", "result.json", "result.review.json"]
    return out


def test_key_images_geometry_and_overlays(case: tuple[Path, CaseResult]) -> None:
    _, result = case
    ctx = ExportContext(result=result, deidentify=False)
    images = render_key_images(ctx)
    assert render_key_images(ctx)[0] is images[0], "cached in ctx.shared"
    want = [(f.id, v) for f in result.findings for v in ("axial", "coronal")] + [("R1", "axial"), ("R1", "coronal")]
    assert [(k.finding_id, k.view) for k in images] == want
    f1 = result.findings[0]
    ax, co = images[0], images[1]
    assert ax.slice_index == round(f1.center_voxel[0]) and co.slice_index == round(f1.center_voxel[1])
    assert images[-1].reader_added and not ax.reader_added
    for k in images:
        assert k.rgb.dtype == np.uint8 and k.rgb.ndim == 3 and k.rgb.shape[2] == 3
        # square pixels whatever the CT's 0.7 x 0.7 x 2.5 mm voxels: the crop is fov_mm over its pixels
        r0, c0, rows, cols = k.crop_box_px
        assert rows == cols and k.pixel_spacing_mm[0] == k.pixel_spacing_mm[1] == pytest.approx(k.fov_mm / cols)
    assert ax.heatmap == "gradcam"
    # the mask outline (bright green) is drawn, and inside the crop it surrounds the nodule's centre
    r0, c0, n, _ = ax.crop_box_px
    crop = ax.rgb[r0:r0 + n, c0:c0 + n].astype(int)
    green = (crop[..., 1] > 200) & (crop[..., 0] < 120) & (crop[..., 2] < 120)
    assert green.sum() > 50
    ys, xs = np.nonzero(green)
    assert ys.min() < n / 2 < ys.max() and xs.min() < n / 2 < xs.max()
    # a reader's point outside the scan is an error that names the finding
    bad = replace(result.review.added_findings[0], center_lps_mm=[0.0, 0.0, 5000.0])  # type: ignore[union-attr]
    rv = replace(result.review, added_findings=[bad])  # type: ignore[type-var]
    with pytest.raises(ExportError, match="R1"):
        render_key_images(ExportContext(result=replace(result, review=rv), deidentify=False))


def test_pdf_pages_ids_and_notice(plain_export: Path) -> None:
    pdf = plain_export / "report.pdf"
    pages = _pages(pdf)
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True).stdout
    n = int(re.search(r"Pages:\s+(\d+)", info).group(1))  # type: ignore[union-attr]
    assert len(pages) == n >= 3
    for i, text in enumerate(pages, 1):
        assert "NOT FOR DIAGNOSTIC USE" in text, f"page {i} lacks the notice"
        assert f"page {i}" in text
    allt = "\n".join(pages)
    assert "Key images" in pages[1], "the key images start on page 2"
    for word in ("Summary", "Findings", "Report text", "Provenance", "Status: concordant", "F1", "R1 (reader-added)",
                 "Lung-RADS", "operating point", "TESTPERSON", PATIENT_ID, "2000-01-01",
                 "[C1→F1]"):  # the report's claim, labelled with the finding it matched
        assert word in allt, word
    # every page renders to a picture that is not blank
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(plain_export / "page")], check=True)
    pngs = sorted(plain_export.glob("page-*.png"))
    assert len(pngs) == n
    from PIL import Image

    assert all(np.asarray(Image.open(p).convert("L")).std() > 5 for p in pngs)


def test_review_goes_into_pdf_and_csv(plain_export: Path, case: tuple[Path, CaseResult]) -> None:
    _, result = case
    text = " ".join(_pdftotext(plain_export / "report.pdf", "-raw").split())
    assert "accepted" in text and "4X → 4B (reader)" in text
    assert "agree: spiculated mass" in text and "small nodule the machine missed" in text
    assert "Reviewed by Dr Reader" in text
    rows = {r["finding_id"]: r for r in csv.DictReader(io.StringIO((plain_export / "findings.csv").read_text()))}
    assert rows["F1"]["review_decision"] == "accepted" and rows["F1"]["review_category"] == "4B"
    assert rows["F1"]["review_comment"].startswith("agree")
    assert rows["R1"]["source"] == "reader" and rows["R1"]["review_category"] == "3"
    if len(result.findings) > 1:
        assert "rejected" in text
        assert rows[result.findings[1].id]["review_decision"] == "rejected"


def test_deidentified_exports_hold_no_identifier(case: tuple[Path, CaseResult], tmp_path: Path) -> None:
    ct, result = case
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(ct.glob("*.dcm"))]
    # every format this build has (the DICOM ones too, once merged): one pseudonym, no identity anywhere
    res = export_case(result, tmp_path, api.available_formats(), deidentify=True)
    forbidden = [*NAME, PATIENT_ID, BIRTH, "1956-03-14", "03/14/1956", ACCESSION, "20000101", "2000-01-01",
                 "Dr Reader", str(src[0].StudyInstanceUID), str(src[0].SeriesInstanceUID),
                 *[str(d.SOPInstanceUID) for d in src]]
    pdf = tmp_path / "report.pdf"
    blobs = {p.name: p.read_bytes() for p in res.all_files}
    blobs["report.pdf (text)"] = _pdftotext(pdf).encode()
    blobs["report.pdf (raw text)"] = _pdftotext(pdf, "-raw").encode()
    blobs["report.pdf (info)"] = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True).stdout
    for name, data in blobs.items():
        low = data.lower()
        for value in forbidden:
            assert value.lower().encode() not in low, f"{value!r} found in {name}"
    label = ExportContext(result=result, deidentify=True).case_label
    assert re.fullmatch(r"LF-[0-9A-F]{10}", label)
    # the same pseudonym in every format, and in the PDF's title
    assert label.encode() in blobs["report.pdf (text)"] and label.encode() in blobs["report.pdf (info)"]
    assert f'"case_id": "{label}"'.encode() in blobs["result.json"]
    assert all(r["case_id"] == label for r in csv.DictReader(io.StringIO(blobs["findings.csv"].decode())))
    for dcm in (p for p in res.all_files if p.suffix == ".dcm"):
        ds = pydicom.dcmread(dcm, stop_before_pixels=True)
        assert ds.PatientID == label and str(ds.PatientName).rstrip("^") == label, dcm.name
    # what the report said about the nodule is still there, the identity is replaced by tags
    text = " ".join(blobs["report.pdf (raw text)"].decode().split())
    assert "33 mm spiculated solid non-calcified mass" in text and "[name]" in text and "[date]" in text


def test_scrub_text_forms() -> None:
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.StudyDate = "DOE^JOHN^Q^MR", "12-34", "19560314", "20210203"
    ident = Identity.from_datasets([ds])
    s = scrub_text("John DOE, ID 12-34, 14 March 1956, Feb. 3rd, 2021, 3.2.21, 20210203; a 4.5 mm nodule, "
                   "UID 1.2.840.20210203.1", ident)
    assert s == ("[name] [name], ID [id], [date], [date], [date], [date]; a 4.5 mm nodule, "
                 "UID 1.2.840.20210203.1")


def test_failed_export_leaves_no_file(case: tuple[Path, CaseResult], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, result = case

    def boom(ctx: ExportContext) -> list[tuple[str, bytes]]:
        raise RuntimeError("disk full")

    monkeypatch.setitem(api.WRITERS, "csv", boom)
    # the PDF is written (staged) first, then the CSV fails: nothing of the export stays
    ctx_result = replace(result, review=None)
    with pytest.raises(ExportError, match="csv export .* failed: RuntimeError: disk full"):
        export_case(ctx_result, tmp_path, "pdf,csv")
    assert list(tmp_path.iterdir()) == []


def test_long_report_and_many_findings_flow(case: tuple[Path, CaseResult], tmp_path: Path) -> None:
    from lungfuse.pipelines.export.pdf import report_pdf

    _, result = case
    f1 = result.findings[0]
    long_comment = " ".join(f"word{i}" for i in range(400)) + " ENDOFCOMMENT"
    added = [ReaderFinding(f"R{i}", list(f1.center_lps_mm), 5.0 + i, "2", f"note {i} " * 12) for i in range(1, 31)]
    rv = Review("Dr Reader", findings=[FindingReview("F1", f1.tracking_uid, "accepted", None, long_comment)],
                added_findings=added)
    # a line break inside the claim's mention (same length: the claim's span stays right)
    text = result.report_text or ""
    cut = text.index(" mass ")
    text = text[:cut] + "\n" + text[cut + 1:]
    long = replace(result, review=rv, report_text=text + "\n"
                   + "\n".join(f"Line {i}: unremarkable mediastinum and pleura. " * 3 for i in range(150))
                   + "\nhttps://pacs.example/" + "x" * 400 + "\nLASTLINE")  # a word longer than the line
    ctx = ExportContext(result=long, deidentify=False)
    ctx.shared["key_images"] = []  # the flow of text and tables is under test, not the pictures
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(report_pdf(ctx))
    pages = _pages(pdf)
    assert len(pages) >= 6
    allt = " ".join(_pdftotext(pdf, "-raw").split())
    assert "LASTLINE" in allt and "ENDOFCOMMENT" in allt and "R30 (reader)" in allt
    assert "non-calcified mass in the left lung" in allt
    assert all("NOT FOR DIAGNOSTIC USE" in p for p in pages)
    # no word runs past the right margin (15 mm) of the A4 page
    bbox = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    xmax = [float(x) for x in re.findall(r'xMax="([\d.]+)"', bbox)]
    assert xmax and max(xmax) <= 595.3 - 15 * 72 / 25.4 + 1.0


def test_cli_export_round_trip(case: tuple[Path, CaseResult], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from lungfuse.app.cli.main import main

    ct, result = case
    saved = tmp_path / "res" / "case.json"
    saved.parent.mkdir()
    result.save(saved)
    assert result.review is not None
    result.review.save(saved.with_name("case.review.json"))
    out = tmp_path / "out"
    assert main(["export", str(saved), "--out", str(out), "--formats", "pdf,csv"]) == 0
    printed = capsys.readouterr().out
    assert "report.pdf" in printed and "findings.csv" in printed and "review merged" in printed
    assert re.search(r"pdf\s+│\s+report\.pdf\s+│\s+\d+\.\d\d", printed), printed
    rows = list(csv.DictReader(io.StringIO((out / "findings.csv").read_text())))
    assert rows[0]["review_decision"] == "accepted" and rows[-1]["finding_id"] == "R1"
    assert "R1 (reader-added)" in _pdftotext(out / "report.pdf")
    # errors: one line naming the file, exit code 2
    assert main(["export", str(tmp_path / "none.json"), "--out", str(out)]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["export", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("lungfuse export: error:") for line in err)
    assert "none.json" in err[0] and "bad.json" in err[1]
    assert main(["export", str(saved), "--out", str(out), "--formats", "pdf,bogus"]) == 2
    assert "unknown export format(s) ['bogus']" in capsys.readouterr().err
    unavailable = [f for f in api.FORMATS if f not in api.available_formats()]
    if unavailable:
        assert main(["export", str(saved), "--out", str(out), "--formats", unavailable[0]]) == 2
        assert "not available in this build" in capsys.readouterr().err


def test_key_image_aspect_orientation_and_mask_mapping() -> None:
    """Synthetic CT (0.7 x 0.7 mm pixels, 2.5 mm slices, no LIDC needed): a 20 mm sphere whose mask
    lives on a 1.5 mm grid of its own must come out round in both views (aspect from the spacing,
    mask mapped through LPS), a marker on the patient's right must be on the image's left (axial)
    and a superior marker at the top (coronal)."""
    from lungfuse.pipelines.analysis.result import Finding
    from lungfuse.pipelines.core.geometry import affine_from
    from lungfuse.pipelines.export.keyimages import render_finding_views

    spacing = (2.5, 0.7, 0.7)  # z, y, x mm
    direction = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])  # array z, y, x -> LPS z, y, x
    aff = affine_from((0.0, 0.0, 0.0), spacing, direction)
    hu = np.full((40, 120, 120), -850, np.int16)
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(hu.shape, spacing, strict=True)), indexing="ij")
    centre_lps = np.array([42.0, 42.0, 50.0])  # x, y, z mm = voxel (20, 60, 60)
    hu[(xx - centre_lps[0]) ** 2 + (yy - centre_lps[1]) ** 2 + (zz - centre_lps[2]) ** 2 <= 10.0 ** 2] = 40
    hu[20, 55:59, 38:42] = 1500   # patient's right of the sphere (LPS x smaller), same axial slice, off row 60
    hu[26:28, 60, 58:62] = 1500   # superior of it (LPS z larger), same coronal row
    # the mask: a 1.5 mm grid starting 15 mm before the centre on every axis
    mz = np.arange(20) * 1.5 + centre_lps[2] - 15.0
    my = np.arange(20) * 1.5 + centre_lps[1] - 15.0
    mx = np.arange(20) * 1.5 + centre_lps[0] - 15.0
    MZ, MY, MX = np.meshgrid(mz, my, mx, indexing="ij")
    mask = (MX - centre_lps[0]) ** 2 + (MY - centre_lps[1]) ** 2 + (MZ - centre_lps[2]) ** 2 <= 10.0 ** 2
    m_aff = affine_from((mx[0], my[0], mz[0]), (1.5, 1.5, 1.5), direction)
    f = Finding(id="F1", tracking_uid="1.2.3", center_voxel=[20.0, 60.0, 60.0], center_lps_mm=list(centre_lps),
                bbox_voxel=[[16, 46, 46], [25, 75, 75]], diameter_mm=20.0, mean_diameter_mm=20.0, volume_mm3=4189.0,
                side="left", lobe="LUL", detection_score=0.9, texture="solid", calcified=False, measurement={},
                mask={"array": "m", "affine_lps": m_aff.tolist(), "spacing_mm": 1.5})
    ax, co = render_finding_views(hu, aff, direction, f, {"m": mask})
    assert (ax.slice_index, co.slice_index) == (20, 60) and ax.heatmap is None
    for k in (ax, co):
        r0, c0, n, _ = k.crop_box_px
        crop = k.rgb[r0:r0 + n, c0:c0 + n].astype(int)
        green = (crop[..., 1] > 200) & (crop[..., 0] < 120) & (crop[..., 2] < 120)
        ys, xs = np.nonzero(green)
        height, width = (ys.max() - ys.min()) * k.pixel_spacing_mm[0], (xs.max() - xs.min()) * k.pixel_spacing_mm[1]
        assert height == pytest.approx(20.0, abs=2.5) and width == pytest.approx(20.0, abs=2.5), (k.view, height, width)
        assert abs((ys.min() + ys.max()) / 2 - n / 2) < 8 and abs((xs.min() + xs.max()) / 2 - n / 2) < 8
        white = crop.min(axis=2) > 250
        white[:, : n // 8] = white[:, -n // 8:] = False  # the orientation letters and the scale bar
        white[-n // 6:, :] = white[: n // 10, :] = False
        wy, wx = np.nonzero(white)
        assert wy.size > 20, k.view
        if k.view == "axial":
            assert wx.mean() < n / 2 - 20 and abs(wy.mean() - n / 2) < 20  # patient's right = image left
        else:
            assert wy.mean() < n / 2 - 20 and abs(wx.mean() - n / 2) < 20  # superior = top
