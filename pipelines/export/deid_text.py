"""De-identification of free text (the report, the reader's comments) for de-identified exports.

Research software, NOT for diagnostic use.

PS3.15's basic profile de-identifies DICOM attributes; a report's free text can still name the
patient ("Mr John Doe, ID 12345, seen on 03/02/2021").  :func:`scrub_text` removes from a text

* the source's identifying values (:class:`Identity`, read from the CT's DICOM headers by
  :meth:`Identity.from_datasets`): the patient's name (each name component of two letters or
  more, as a whole word, any case), patient ID, other patient IDs and accession numbers
  (literally), and the birth, study, series, acquisition and content dates in every form below;
* every date, known or not: DICOM DA (``20210203``), ISO (``2021-02-03``), numeric day/month and
  month/day orders with ``/``, ``.`` or ``-`` and 2- or 4-digit years, and written forms
  (``3 February 2021``, ``Feb. 3rd, 2021``, ``February 2021``).

Each is replaced by a bracketed tag (``[name]``, ``[id]``, ``[date]``) so that a reader sees
that something was removed.  The PDF, the JSON, the CSV and the DICOM exports use the same
function, so a value scrubbed in one is scrubbed in all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Identity", "scrub_text", "DATE_TAG", "NAME_TAG", "ID_TAG"]

NAME_TAG = "[name]"
ID_TAG = "[id]"
DATE_TAG = "[date]"

#: the DICOM attributes whose values are scrubbed from free text
NAME_KEYWORDS = ("PatientName", "PatientBirthName", "PatientMotherBirthName", "OtherPatientNames")
ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "IssuerOfPatientID", "StudyID")
DATE_KEYWORDS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
                 "InstanceCreationDate")

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
# "Sept" too; "May" only in full (the abbreviation is the same word)
_MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?" \
         r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_YEAR4 = r"(?:19|20)\d{2}"
_DATE_PATTERNS = [
    # DICOM DA, not a component of a UID or a longer number
    rf"(?<![\d.]){_YEAR4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\.?\d)",
    # ISO and year-first numeric forms: 2021-02-03, 2021/2/3, 2021.02.03
    rf"(?<![\d.]){_YEAR4}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])(?!\.?\d)",
    # day/month/year and month/day/year, 4- or 2-digit year: 03/02/2021, 2.3.21, 03-02-2021
    r"(?<![\d.])(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:\d{4}|\d{2})(?!\.?\d)",
    # written: 3 February 2021, 3rd of Feb. 2021, February 3, 2021, Feb 3rd 2021, February 2021
    rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR4}\b",
    rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR4}\b",
    rf"\b{_MONTH},?\s+{_YEAR4}\b",
]
_DATES = re.compile("|".join(f"(?:{p})" for p in _DATE_PATTERNS), re.IGNORECASE)


def _text_values(value: Any) -> list[str]:
    """The strings of a DICOM value (multi-valued elements, PersonName objects), stripped."""
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def _name_components(name: str) -> list[str]:
    """The words of a DICOM PN (``Family^Given^Middle^Prefix^Suffix``, groups by ``=``) or a written
    name, two letters or more; prefixes and suffixes ("Mr", "Jr") are not names and are kept."""
    words: list[str] = []
    for group in name.split("="):
        parts = group.split("^")
        for part in parts[:3] if len(parts) > 1 else parts:
            words += [w for w in re.split(r"[\s,]+", part) if len(w.strip(".-'")) >= 2]
    return words


def _date_forms(da: str) -> list[str]:
    """Written forms of a DICOM DA ``YYYYMMDD`` beyond the generic patterns (e.g. ``3.2.21``
    written with spaces); the generic patterns catch the usual ones."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", da.strip())
    if not m:
        return [da] if da.strip() else []
    y, mo, d = m.groups()
    month = _MONTHS[int(mo) - 1] if 1 <= int(mo) <= 12 else mo
    return [da, f"{y}-{mo}-{d}", f"{int(d)} {month} {y}", f"{month} {int(d)}, {y}", f"{d} {mo} {y}",
            f"{mo} {d} {y}"]


@dataclass(frozen=True)
class Identity:
    """Identifying values of one source, to be scrubbed from free text.

    Attributes:
        names: patient name words (two letters or more).
        ids: patient IDs, accession numbers and other literal identifiers.
        dates: DICOM DA dates (``YYYYMMDD``) of the patient and the study.
    """

    names: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()

    @classmethod
    def from_datasets(cls, datasets: Iterable[Any], extra_ids: Iterable[str] = ()) -> Identity:
        """The identity in DICOM headers (pydicom Datasets; the values of every slice are pooled,
        as a series can carry several dates).  ``extra_ids``: further literal identifiers (the
        result's case id and patient ID)."""
        names: set[str] = set()
        ids: set[str] = {s.strip() for s in extra_ids if s and s.strip()}
        dates: set[str] = set()
        for ds in datasets:
            for kw in NAME_KEYWORDS:
                for v in _text_values(ds.get(kw)):
                    names.update(_name_components(v))
            for kw in ID_KEYWORDS:
                ids.update(_text_values(ds.get(kw)))
            for kw in DATE_KEYWORDS:
                dates.update(_text_values(ds.get(kw)))
        # longest first, so that "LIDC-IDRI-0001" goes before a shorter id inside it
        return cls(tuple(sorted(names, key=lambda s: (-len(s), s))), tuple(sorted(ids, key=lambda s: (-len(s), s))),
                   tuple(sorted(dates)))

    def merged(self, other: Identity) -> Identity:
        return Identity(tuple(sorted({*self.names, *other.names}, key=lambda s: (-len(s), s))),
                        tuple(sorted({*self.ids, *other.ids}, key=lambda s: (-len(s), s))),
                        tuple(sorted({*self.dates, *other.dates})))

    def values(self) -> list[str]:
        """Every identifying string (for checks: none may appear in a de-identified output)."""
        return [*self.names, *self.ids, *self.dates]


def scrub_text(text: str | None, identity: Identity | None = None) -> str | None:
    """``text`` with the identity's values and every date replaced by ``[name]``, ``[id]``, ``[date]``.

    None stays None.  Identifiers are matched literally and case-insensitively; name words as
    whole words; an identifier of fewer than 3 characters is skipped (it would match inside
    ordinary words and sizes).
    """
    if text is None:
        return None
    ident = identity or Identity()
    out = text
    for v in ident.ids:
        if len(v) >= 3:
            out = _whole(v).sub(ID_TAG, out)
    for da in ident.dates:
        for form in _date_forms(da):
            out = _whole(form).sub(DATE_TAG, out)
    out = _DATES.sub(DATE_TAG, out)
    for w in ident.names:
        out = _whole(w).sub(NAME_TAG, out)
    return out


def _whole(value: str) -> re.Pattern[str]:
    """``value`` as a whole token, any case: not inside a word, nor a component of a dotted number (a UID)."""
    return re.compile(rf"(?<!\w)(?<!\d\.){re.escape(value)}(?!\w)(?!\.\d)", re.IGNORECASE)
