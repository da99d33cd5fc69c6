"""Deterministic DICOM UIDs and the de-identification pseudonym of an export.

Research software, NOT for diagnostic use.

Re-exporting the same result must give the same SOP Instance UIDs, so that a PACS receives an
update and not a duplicate: every UID an export creates is derived (pydicom ``generate_uid`` with
entropy sources, i.e. a SHA-512 hash under the ``2.25.`` root) from the result's analysis UID and
a fixed name of the object (``"sr"``, ``"seg"``, ``"sc/3"``...).  With ``--deidentify`` the
source's UIDs (study, series, frame of reference, SOP instances) are remapped the same way from a
secret-free but non-reversible hash, so two exports of one study map to the same new UIDs and the
original UIDs never appear in the output.
"""

from __future__ import annotations

import hashlib

from pydicom.uid import generate_uid

__all__ = ["export_uid", "remap_uid", "pseudonym"]

# The salt makes the remapped UIDs and pseudonyms LungFuse's own (another tool hashing the same
# UID gets different values); it is not a secret, so this is pseudonymisation, not anonymisation.
_SALT = "lungfuse-deid-v1"


def export_uid(analysis_uid: str | None, name: str, fallback: str = "") -> str:
    """The UID of export object ``name`` (``"sr"``, ``"seg"``, ``"sc/0"``, ``"series/sr"``...) of one analysis.

    ``analysis_uid`` None (a result saved before provenance existed) uses ``fallback`` (for
    example the input fingerprint) so that the UID is still stable for that result.
    """
    base = analysis_uid or fallback
    if not base:
        raise ValueError(f"export_uid({name!r}): the result has neither an analysis UID nor a fallback")
    return str(generate_uid(entropy_srcs=["lungfuse export", base, name]))


def remap_uid(original_uid: str) -> str:
    """The de-identified replacement of a source UID (PS3.15 E.1: UIDs replaced consistently)."""
    return str(generate_uid(entropy_srcs=[_SALT, original_uid]))


def pseudonym(study_instance_uid: str, fallback: str = "") -> str:
    """The patient / study pseudonym of a de-identified export: ``LF-`` + 10 hex digits.

    Derived from the study instance UID (``fallback``, e.g. the input fingerprint, when the study
    UID is unknown), so the PDF, the JSON, the CSV and the DICOM objects of one study all carry
    the same pseudonym, and a re-export gives the same one.
    """
    base = study_instance_uid or fallback
    if not base:
        raise ValueError("pseudonym: neither a study UID nor a fallback to derive it from")
    return "LF-" + hashlib.sha256(f"{_SALT}\0{base}".encode()).hexdigest()[:10].upper()
