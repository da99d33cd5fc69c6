"""What a batch audit reads: the cases (a folder of case folders or a manifest CSV) and the cheap
fingerprints that let a re-run skip unchanged work.

Research software, NOT for diagnostic use.

Input forms (:func:`discover_cases`):

* **a folder of case folders** - every visible sub-folder is a case, its name the case id.  The
  CT is the folder itself (a DICOM series in any layout: :func:`~lungfuse.pipelines.io.dicom.load_ct`
  picks the CT stack), the report is ``report.txt`` / ``report.md`` / ``REPORT.txt`` at the top of
  the case folder, else a DICOM SR lying there (``*.dcm`` with Modality ``SR``), else none.
* **a manifest CSV** with the header ``case_id,ct_path,report_path``; paths relative to the
  manifest's folder; ``report_path`` may be empty (no report).  A malformed manifest raises
  :class:`ManifestError` naming the file and the line.

The fingerprint (:func:`case_fingerprint`) is :func:`~lungfuse.pipelines.analysis.result.input_fingerprint`
computed from the DICOM headers alone (the fast header scan, the same series choice and slice
order as ``load_ct``) and the report text, i.e. what ``CaseResult.provenance.input_fingerprint``
will be, without reading a pixel.  Where that cannot be computed (a folder that does not read as
one CT series, NIfTI, multi-frame) it falls back to a digest of the file listing (relative path,
size, modification time) and the report bytes, prefixed ``files:``; either way, any change of the
inputs changes the fingerprint.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungfuse.pipelines.core.errors import InputError
from lungfuse.pipelines.io.case_files import REPORT_NAMES

__all__ = ["AuditCase", "ManifestError", "MANIFEST_COLUMNS", "case_fingerprint", "current_model_hashes",
           "discover_cases", "model_hashes"]

MANIFEST_COLUMNS = ("case_id", "ct_path", "report_path")
#: A case id is a folder name under ``DIR/cases``: letters, digits, ``.``, ``_``, ``-``, not starting with a dot.
_CASE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class ManifestError(InputError):
    """A manifest CSV that cannot be read (the message names the file and the line)."""


@dataclass(frozen=True)
class AuditCase:
    """One case of the batch: its id, the CT path (folder or file) and the report path (or None)."""

    case_id: str
    ct_path: Path
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "ct_path": str(self.ct_path),
                "report_path": str(self.report_path) if self.report_path else None}


def discover_cases(source: str | os.PathLike[str]) -> list[AuditCase]:
    """The cases of ``source``: a folder of case folders, or a manifest ``.csv`` (see the module doc).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ManifestError: a malformed manifest (names the line), or a folder with no case folder.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"audit input not found: {src}")
    if src.is_file():
        return _read_manifest(src)
    cases = [AuditCase(_safe_id(d.name, f"case folder {d}"), d, _folder_report(d))
             for d in sorted(src.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not cases:
        raise ManifestError(f"{src}: no case folders in it (expected one sub-folder per case, each a DICOM "
                            "series with an optional report.txt), and it is not a manifest CSV")
    return cases


def _safe_id(name: str, where: str) -> str:
    if not _CASE_ID.match(name):
        raise ManifestError(f"{where}: case id {name!r} is not usable as a folder name (letters, digits, "
                            "'.', '_', '-'; at most 128 characters; not starting with '.')")
    return name


def _folder_report(case_dir: Path) -> Path | None:
    """``report.txt``/``.md`` at the top of ``case_dir``, else a DICOM SR there, else None.

    Only the top of the case folder is searched: ``find_report`` also looks one folder up, which
    for a case folder is the batch folder, whose report (if any) belongs to no case.
    """
    for name in REPORT_NAMES:
        if (case_dir / name).is_file():
            return case_dir / name
    for p in sorted(case_dir.glob("*.dcm")):
        if _is_sr(p):
            return p
    return None


def _is_sr(path: Path) -> bool:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # noqa: BLE001 - not DICOM, or broken: then not the report either
        return False
    return str(getattr(ds, "Modality", "")) == "SR"


def _read_manifest(path: Path) -> list[AuditCase]:
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not a UTF-8 CSV manifest ({e})") from e
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip().lower() for c in rows[0]] != list(MANIFEST_COLUMNS):
        got = ",".join(rows[0]) if rows else "(empty file)"
        raise ManifestError(f"{path} line 1: expected the header {','.join(MANIFEST_COLUMNS)}, got {got!r}")
    cases: list[AuditCase] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        if len(row) != 3:
            raise ManifestError(f"{path} line {lineno}: expected 3 fields (case_id,ct_path,report_path), "
                                f"got {len(row)}: {','.join(row)!r}")
        cid, ct, rep = (c.strip() for c in row)
        if not cid or not ct:
            raise ManifestError(f"{path} line {lineno}: case_id and ct_path must not be empty")
        _safe_id(cid, f"{path} line {lineno}")
        if cid in seen:
            raise ManifestError(f"{path} line {lineno}: case id {cid!r} repeats line {seen[cid]}")
        seen[cid] = lineno
        cases.append(AuditCase(cid, (base / ct) if not Path(ct).is_absolute() else Path(ct),
                               ((base / rep) if not Path(rep).is_absolute() else Path(rep)) if rep else None))
    if not cases:
        raise ManifestError(f"{path}: the manifest lists no case")
    return cases


# -- fingerprints ----------------------------------------------------------------------------------
def case_fingerprint(case: AuditCase) -> str:
    """The case's input fingerprint, cheaply (headers and report text; see the module docstring).

    Equal to the ``provenance.input_fingerprint`` of the analysis for a single-frame DICOM
    series; ``files:...`` (file listing + report bytes) otherwise.  Never raises for a bad input:
    a case that cannot be read still gets a fingerprint, so that its error is not redone until
    the input changes.
    """
    report_text = _report_text(case.report_path)
    if report_text is not None:
        try:
            sops = _series_sops(case.ct_path)
        except Exception:  # noqa: BLE001 - any unreadable input: the listing fingerprint below
            sops = None
        if sops is not None:
            from lungfuse.pipelines.analysis.result import input_fingerprint

            return input_fingerprint(sops[0], sops[1], report_text)
    return "files:" + _listing_digest(case)


def _report_text(report: Path | None) -> str | None:
    """The text the analysis will see ("" for none); None when the report cannot be read."""
    if report is None:
        return ""
    from lungfuse.pipelines.io.report import load_report

    try:
        return load_report(report).text
    except (OSError, ValueError):
        return None


def _series_sops(ct: Path) -> tuple[str, list[str]] | None:
    """(SeriesInstanceUID, SOP Instance UIDs in slice order) of the CT stack ``load_ct`` would
    assemble from ``ct``, from the headers alone; None for inputs it reads otherwise."""
    import numpy as np

    from lungfuse.pipelines.io.dicom_series import choose_series, group_series, scan_headers
    from lungfuse.pipelines.io.stack import stack_geometry

    if not ct.is_dir():
        return None
    headers, warns, _ = scan_headers(ct)
    if not headers or any(h.n_frames > 1 for h in headers):
        return None
    _, hs = choose_series(group_series(headers), None, warns, ct)
    hs = [h for h in hs if h.ipp is not None and h.iop is not None]
    if len(hs) < 3:
        return None
    # the same slice order and duplicate removal as load_ct's _assemble
    iop = tuple(float(np.median([h.iop[i] for h in hs])) for i in range(6))  # type: ignore[index]
    ipps = np.array([h.ipp for h in hs], dtype=np.float64)
    thickness = float(np.median([h.thickness for h in hs if h.thickness])) if any(h.thickness for h in hs) else None
    order, keep, *_ = stack_geometry(ipps, iop, thickness, [h.path for h in hs])
    chosen = [hs[i] for i in order[keep]]
    return chosen[0].series_uid, [h.sop_uid for h in chosen]


def _listing_digest(case: AuditCase) -> str:
    h = hashlib.sha256()
    ct = case.ct_path
    files = sorted(p for p in ct.rglob("*") if p.is_file()) if ct.is_dir() else ([ct] if ct.exists() else [])
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(ct) if ct.is_dir() else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if case.report_path is not None:
        h.update(b"\0report\0")
        try:
            h.update(case.report_path.read_bytes())
        except OSError as e:
            h.update(repr(e).encode())
    return h.hexdigest()


def model_hashes(models_info: dict[str, Any]) -> dict[str, str | None]:
    """``{model name: SHA-256}`` from a result's ``models`` block (what the ledger compares)."""
    return {k: v.get("sha256") for k, v in sorted(models_info.items()) if isinstance(v, dict)}


def current_model_hashes(models_dir: str | os.PathLike[str] | None = None) -> dict[str, str | None]:
    """The same mapping as :func:`model_hashes` for the models an analysis would load now, read
    from the folder's ``manifest.json`` (no weights loaded; the registry checks the files against
    it when it loads them) and the packaged text encoder."""
    from lungfuse.pipelines.core.resources import models_dir as default_models_dir
    from lungfuse.pipelines.inference.registry import text_encoder_info

    mdir = Path(models_dir) if models_dir else default_models_dir()
    manifest = json.loads((mdir / "manifest.json").read_text())["files"]

    def sha(name: str) -> str | None:
        return manifest.get(name, {}).get("sha256") if (mdir / name).exists() else None

    out = {"detector": sha("detector.pt"), "fusion": sha("fusion.pt"), "consistency": sha("consistency.json"),
           "rules": sha("rules.json"), "text_encoder": text_encoder_info()["sha256"]}
    if (mdir / "fpr.pt").exists():
        out["fpr"] = sha("fpr.pt")
    return dict(sorted(out.items()))
