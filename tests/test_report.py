"""Report loading: encodings, section splitting, validation, DICOM SR text."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from lungfuse.pipelines.io.report import (
    BODY,
    Report,
    Section,
    canonical_section_name,
    decode_bytes,
    load_report,
    not_text_reason,
    split_sections,
)

US_REPORT = """EXAM: CT CHEST WITHOUT CONTRAST

CLINICAL HISTORY: 67-year-old male, former smoker, chronic cough.

TECHNIQUE: Helical CT of the chest without intravenous contrast. Axial 1.25 mm slices with coronal and sagittal reformats.

COMPARISON: CT chest 04/11/2022.

FINDINGS:
Lungs: There is a 6 mm solid nodule in the right upper lobe (series 4, image 56), unchanged. Mild centrilobular emphysema.
Pleura: No pleural effusion or pneumothorax.
Mediastinum: No lymphadenopathy.

IMPRESSION:
1. Stable 6 mm right upper lobe nodule.
2. Emphysema.
"""


def names(report: Report) -> list[str]:
    return [s.name for s in report.sections]


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------
def test_standard_report_sections_and_offsets() -> None:
    rep = load_report(US_REPORT)
    assert names(rep) == ["EXAM", "CLINICAL HISTORY", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION"]
    for sec in rep.sections:
        assert rep.text[sec.start : sec.end] == sec.text
        assert sec.text == sec.text.strip()
    assert rep.section("findings").startswith("Lungs: There is a 6 mm solid nodule")
    assert rep.section("Impression") == "1. Stable 6 mm right upper lobe nodule.\n2. Emphysema."
    assert rep.encoding == "str" and rep.source is None
    assert rep.section("addendum") is None


@pytest.mark.parametrize(
    ("text", "expected_name", "expected_body"),
    [
        ("FINDINGS: Lungs clear.", "FINDINGS", "Lungs clear."),
        ("Findings - Lungs clear.", "FINDINGS", "Lungs clear."),
        ("findings:\nLungs clear.", "FINDINGS", "Lungs clear."),
        ("IMPRESSION\nNo nodules.", "IMPRESSION", "No nodules."),
        ("Impression: No nodules.", "IMPRESSION", "No nodules."),
        ("CONCLUSION: No nodules.", "IMPRESSION", "No nodules."),
        ("Conclusions -\nNo nodules.", "IMPRESSION", "No nodules."),
        ("## Findings\nLungs clear.", "FINDINGS", "Lungs clear."),
        ("**Impression:** No nodules.", "IMPRESSION", "No nodules."),
        ("IMPRESSION 1. No nodules.", "IMPRESSION", "1. No nodules."),
        ("Clinical Indication: cough", "CLINICAL HISTORY", "cough"),
        ("REASON FOR EXAM: screening", "CLINICAL HISTORY", "screening"),
        ("Comparison: None.", "COMPARISON", "None."),
        ("Impression/Recommendation: Follow-up CT.", "IMPRESSION", "Follow-up CT."),
        ("   TECHNIQUE: Low-dose CT.", "TECHNIQUE", "Low-dose CT."),
    ],
)
def test_header_variants(text: str, expected_name: str, expected_body: str) -> None:
    rep = load_report(text)
    assert names(rep) == [expected_name]
    assert rep.sections[0].text == expected_body


def test_one_paragraph_report_with_inline_headers_splits() -> None:
    text = (
        "CT chest without contrast. History: smoker. Comparison: none. Findings: 5 mm nodule in the "
        "right lower lobe. No effusion. Impression: 5 mm RLL nodule."
    )
    rep = load_report(text)
    assert names(rep) == [BODY, "CLINICAL HISTORY", "COMPARISON", "FINDINGS", "IMPRESSION"]
    assert rep.section("body") == "CT chest without contrast."
    assert rep.section("findings") == "5 mm nodule in the right lower lobe. No effusion."
    assert rep.section("impression") == "5 mm RLL nodule."


def test_all_caps_inline_header_without_colon() -> None:
    rep = load_report("CT CHEST. FINDINGS THE LUNGS ARE CLEAR. IMPRESSION NORMAL CT.")
    assert names(rep) == [BODY, "FINDINGS", "IMPRESSION"]
    assert rep.section("impression") == "NORMAL CT."


@pytest.mark.parametrize(
    "text",
    [
        "Findings show a small nodule in the right upper lobe.",  # prose, no delimiter
        "There are no findings: the lungs are clear.",  # not after a sentence boundary
        "History of smoking. Nodule stable on prior study: yes.",
        "Follow-up CT in 12 months.",
    ],
)
def test_prose_is_not_split_into_sections(text: str) -> None:
    rep = load_report(text)
    assert names(rep) == [BODY]
    assert rep.sections[0].text == text


def test_no_header_report_is_one_body_section() -> None:
    rep = load_report("Lungs are clear. No nodules.")
    assert len(rep.sections) == 1 and rep.sections[0].name == BODY
    assert rep.section(BODY) == "Lungs are clear. No nodules."
    assert rep.section("findings") is None


def test_empty_header_section_and_section_at() -> None:
    rep = load_report("FINDINGS:\nIMPRESSION: Normal.")
    assert names(rep) == ["FINDINGS", "IMPRESSION"]
    assert rep.sections[0].text == "" and rep.section("findings") is None
    imp = rep.sections_named("impression")[0]
    assert rep.section_at(imp.start).name == "IMPRESSION"
    assert rep.section_at(0).name == "FINDINGS"


def test_canonical_section_names() -> None:
    assert canonical_section_name("Conclusion") == "IMPRESSION"
    assert canonical_section_name("## Findings") == "FINDINGS"
    assert canonical_section_name("CLINICAL INDICATION") == "CLINICAL HISTORY"
    assert canonical_section_name("Lungs") is None


# ---------------------------------------------------------------------------
# Encodings and files
# ---------------------------------------------------------------------------
def test_latin1_file(tmp_path: Path) -> None:
    text = "FINDINGS: Nodule 5 mm in the right upper lobe, noted by Dr. Müller; 45° angle.\nIMPRESSION: Nodule."
    path = tmp_path / "report_latin1.txt"
    path.write_bytes(text.encode("latin-1"))
    rep = load_report(path)
    assert rep.encoding == "latin-1"
    assert "Müller" in rep.text and "45°" in rep.text
    assert rep.source == str(path)
    assert rep.section("impression") == "Nodule."


def test_cp1252_smart_quotes(tmp_path: Path) -> None:
    text = "FINDINGS: The \u201cnodule\u201d is 4 mm \u2013 stable.\r\nIMPRESSION: Stable."
    path = tmp_path / "report.txt"
    path.write_bytes(text.encode("cp1252"))
    rep = load_report(path)
    assert rep.encoding == "cp1252"
    assert "\u201cnodule\u201d" in rep.text and "\r" not in rep.text


def test_utf8_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffFINDINGS:\r\n5 mm nodule in the RUL.\r\nIMPRESSION:\r\nNodule – stable.\r\n".encode())
    rep = load_report(str(path))
    assert rep.encoding == "utf-8-sig"
    assert not rep.text.startswith("\ufeff") and "\r" not in rep.text
    assert names(rep) == ["FINDINGS", "IMPRESSION"]
    assert rep.section("impression") == "Nodule – stable."


def test_plain_utf8_and_utf16_files(tmp_path: Path) -> None:
    p8 = tmp_path / "a.md"
    p8.write_text("## Findings\nGround‑glass nodule, 6 mm.\n", encoding="utf-8")
    assert load_report(p8).encoding == "utf-8"
    p16 = tmp_path / "b.txt"
    p16.write_bytes("FINDINGS: 6 mm nodule.".encode("utf-16"))
    rep = load_report(p16)
    assert rep.encoding == "utf-16" and rep.section("findings") == "6 mm nodule."


def test_decode_bytes_order() -> None:
    assert decode_bytes(b"abc") == ("abc", "utf-8")
    assert decode_bytes("é".encode("latin-1"))[1] == "latin-1"
    assert decode_bytes("\u2019".encode("cp1252")) == ("\u2019", "cp1252")


def test_bytes_input() -> None:
    rep = load_report("IMPRESSION: Négatif.".encode("latin-1"))
    assert rep.encoding == "latin-1" and rep.section("impression") == "Négatif."


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "report.txt"
    with pytest.raises(FileNotFoundError, match="report.txt"):
        load_report(missing)
    with pytest.raises(FileNotFoundError, match="missing_report.txt"):
        load_report(str(tmp_path / "missing_report.txt"))


def test_single_line_text_is_text_not_path() -> None:
    rep = load_report("No pulmonary nodules.")
    assert rep.text == "No pulmonary nodules." and rep.source is None


@pytest.mark.parametrize("bad", ["", "   ", "\n\t\n"])
def test_empty_text_raises(bad: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        load_report(bad)


def test_empty_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"\r\n  \r\n")
    with pytest.raises(ValueError, match="empty"):
        load_report(path)


def test_report_validation() -> None:
    with pytest.raises(TypeError):
        Report(text=b"FINDINGS: x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Report(text="abc", sections=(Section("FINDINGS", 0, 10),))
    rep = Report(text="IMPRESSION: ok")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.text = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        Section("FINDINGS", 5, 2)
    assert split_sections("IMPRESSION: ok") == rep.sections


# ---------------------------------------------------------------------------
# DICOM SR
# ---------------------------------------------------------------------------
def _code(meaning: str):  # type: ignore[no-untyped-def]
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = "121071"
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _text_item(meaning: str, value: str):  # type: ignore[no-untyped-def]
    from pydicom.dataset import Dataset

    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = [_code(meaning)]
    item.TextValue = value
    return item


def test_dicom_sr_text_items(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("CT Chest Report")]
    findings = Dataset()
    findings.RelationshipType = "CONTAINS"
    findings.ValueType = "CONTAINER"
    findings.ConceptNameCodeSequence = [_code("Findings")]
    findings.ContentSequence = [_text_item("Finding", "There is a 7 mm nodule in the left lower lobe.")]
    ds.ContentSequence = [findings, _text_item("Impression", "7 mm LLL nodule. Lung-RADS 3.")]
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)

    rep = load_report(path)
    assert rep.encoding == "dicom-sr"
    assert rep.section("findings") == "There is a 7 mm nodule in the left lower lobe."
    assert rep.section("impression") == "7 mm LLL nodule. Lung-RADS 3."


def test_dicom_without_text_raises(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Anon"
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError, match="TEXT"):
        load_report(path)


# ---------------------------------------------------------------------------
# Not text: a clear input error naming the file (issue 21, section 7)
# ---------------------------------------------------------------------------
_NOT_TEXT = {
    "random": lambda: random.Random(21).randbytes(4096),
    "random-short": lambda: random.Random(7).randbytes(64),
    "png": lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(1).randbytes(800),
    "pdf": lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n",
    "docx": lambda: b"PK\x03\x04\x14\x00\x06\x00" + random.Random(2).randbytes(300),
    "nul-only": lambda: b"\x00" * 500,
    # binary that happens to be valid UTF-8: control characters, no signature
    "utf8-controls": lambda: bytes(range(0, 32)) * 20,
}


@pytest.mark.parametrize("kind", sorted(_NOT_TEXT))
def test_report_that_is_not_text_is_a_report_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    from lungfuse.pipelines.core.errors import ReportError

    data = _NOT_TEXT[kind]()
    path = tmp_path / "report.txt"
    path.write_bytes(data)
    with pytest.raises(ReportError, match="is not text") as exc:
        load_report(path)
    assert exc.value.path == path and str(path) in str(exc.value)
    with pytest.raises(ReportError, match="not text"):
        load_report(data)  # raw bytes: the same rule, no file to name
    text, _ = decode_bytes(data)
    assert not_text_reason(data, text) is not None
    if kind in ("png", "pdf"):
        assert kind.upper() in str(exc.value)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252", "latin-1"])
def test_text_in_every_supported_encoding_is_still_text(tmp_path: Path, encoding: str) -> None:
    text = US_REPORT.replace("6 mm solid", "6 mm “solid”" if encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252")
                             else "6 mm «solid»").replace("emphysema", "emphysème")
    path = tmp_path / "r.md"
    data = text.replace("\n", "\r\n").encode(encoding)
    path.write_bytes(data)
    rep = load_report(path)
    assert "IMPRESSION" in names(rep) and "emphysème" in rep.text
    assert not_text_reason(data, decode_bytes(data)[0]) is None


def test_stray_control_characters_and_end_padding_are_still_text(tmp_path: Path) -> None:
    # A form feed between pages, a stray BEL and ESC, NUL padding and a DOS EOF at the end: RIS exports do this.
    data = (US_REPORT.replace("chronic cough.", "chronic cough.\x07\f").replace("Emphysema.", "Emphysema.\x1b").encode()
            + b"\x00" * 64 + b"\x1a")
    path = tmp_path / "r.txt"
    path.write_bytes(data)
    rep = load_report(path)
    assert rep.encoding == "utf-8" and "6 mm solid nodule" in rep.text and "IMPRESSION" in names(rep)
