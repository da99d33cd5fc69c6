"""``export_case``: one call that writes a result's exports (CLI ``lungfuse export``, the GUI's
Export menu and the batch audit all use it).

Research software, NOT for diagnostic use.

Formats and the files they write in the output folder:

=======  ==========================================================================
json     ``result.json`` - the full CaseResult v2, and ``result.review.json`` - the review
csv      ``findings.csv`` - one row per finding, review decisions included
pdf      ``report.pdf`` - the annotated report
sr       ``sr.dcm`` - DICOM Comprehensive 3D SR, TID 1500 measurement report
seg      ``seg.dcm`` - DICOM Segmentation, one binary segment per nodule mask
sc       ``sc_<finding>_<view>.dcm`` - Secondary Capture key images, overlays burned in
=======  ==========================================================================

Every export is all-or-nothing (:class:`~.writing.StagedWrite`): a format that fails leaves no
file of this export behind, and the error names the format.  The DICOM formats need the source
CT (:func:`~.source.load_source`); the others do not, so ``json,csv`` works from a saved result
alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungfuse.pipelines.analysis.result import CaseResult
from lungfuse.pipelines.core.errors import ConfigurationError, InputError
from lungfuse.pipelines.core.volume import CTVolume
from lungfuse.pipelines.export.deid_text import Identity, scrub_text
from lungfuse.pipelines.export.source import ExportError, SourceCase, load_source
from lungfuse.pipelines.export.tables import findings_csv, result_json, review_json
from lungfuse.pipelines.export.uids import pseudonym
from lungfuse.pipelines.export.writing import StagedWrite

__all__ = ["FORMATS", "DICOM_FORMATS", "ExportContext", "ExportResult", "available_formats", "export_case",
           "parse_formats", "resolve_formats", "WRITERS"]

FORMATS = ("pdf", "sr", "seg", "sc", "json", "csv")
DICOM_FORMATS = frozenset({"sr", "seg", "sc"})


@dataclass
class ExportContext:
    """What a format writer gets: the result, the source CT (read on first use), the options.

    ``case_label``: what the exports call the case: the case id, or with ``deidentify`` the
    pseudonym (:func:`~.uids.pseudonym`), the same in every format.
    """

    result: CaseResult
    deidentify: bool
    ct_path: str | os.PathLike[str] | None = None
    volume: CTVolume | None = None
    _source: SourceCase | None = field(default=None, repr=False)
    shared: dict[str, Any] = field(default_factory=dict, repr=False)  # objects formats share (the SEG for the SR)

    @property
    def source(self) -> SourceCase:
        if self._source is None:
            self._source = load_source(self.result, self.ct_path, volume=self.volume)
        return self._source

    @property
    def identity(self) -> Identity:
        """The source's identifying values (patient name, IDs, dates) that de-identified exports
        scrub from free text (:mod:`.deid_text`): from the CT's DICOM headers when the CT can be
        read, else the result's case id and patient ID only.  Cached in ``shared``."""
        ident = self.shared.get("identity")
        if ident is None:
            ids = self.result.identifiers
            extra = [self.result.case_id, ids.patient_id if ids is not None else ""]
            try:
                datasets = self.source.datasets
            except (InputError, OSError):  # json/csv from a saved result alone: no CT headers to read
                datasets = []
            ident = Identity.from_datasets(datasets, extra_ids=extra)
            self.shared["identity"] = ident
        return ident

    def scrub(self, text: str) -> str:
        """``text`` as the exports print it: with ``deidentify``, the identity and every date removed."""
        if not self.deidentify:
            return text
        return scrub_text(text, self.identity) or ""

    @property
    def case_label(self) -> str:
        if not self.deidentify:
            return self.result.case_id
        ids = self.result.identifiers
        return pseudonym(ids.study_instance_uid if ids is not None else "",
                         fallback=self.result.provenance.input_fingerprint or self.result.case_id)


#: format -> writer(ctx) -> [(file name, bytes)].  The DICOM and PDF writers register themselves
#: from their modules (imported lazily in :func:`_writers`) so that ``json,csv`` needs neither
#: highdicom nor matplotlib.
Writer = Callable[[ExportContext], list[tuple[str, bytes]]]
WRITERS: dict[str, Writer] = {}


def _write_json(ctx: ExportContext) -> list[tuple[str, bytes]]:
    scrub = ctx.scrub if ctx.deidentify else None
    parts = [("result.json", result_json(ctx.result, deidentify=ctx.deidentify, case_id=ctx.case_label, scrub=scrub))]
    review = review_json(ctx.result, deidentify=ctx.deidentify, scrub=scrub)
    if review is not None:
        parts.append(("result.review.json", review))
    return parts


def _write_csv(ctx: ExportContext) -> list[tuple[str, bytes]]:
    return [("findings.csv", findings_csv(ctx.result, case_id=ctx.case_label,
                                          scrub=ctx.scrub if ctx.deidentify else None))]


WRITERS["json"] = _write_json
WRITERS["csv"] = _write_csv


def _writers() -> dict[str, Writer]:
    import importlib

    for mod in ("pdf", "seg", "sr", "sc"):
        try:
            importlib.import_module(f"lungfuse.pipelines.export.{mod}")
        except ModuleNotFoundError as e:  # a format not built yet: export_case says which
            if e.name != f"lungfuse.pipelines.export.{mod}":
                raise
    return WRITERS


def available_formats() -> tuple[str, ...]:
    """The formats this build can write (:data:`FORMATS` order): a format whose module is not
    installed yet (the DICOM writers before their branch is merged) is missing."""
    writers = _writers()
    return tuple(f for f in FORMATS if f in writers)


def resolve_formats(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """A ``--formats`` value -> the formats to write: None or ``"all"`` = every available one.

    Raises:
        ConfigurationError: an unknown format, or one this build does not have (the message
            names it and lists the available ones).
    """
    have = available_formats()
    if spec is None or spec == "all":
        return have
    try:
        fmts = parse_formats(spec)
    except ValueError as e:
        raise ConfigurationError(f"--formats: {e}") from None
    missing = [f for f in fmts if f not in have]
    if missing:
        raise ConfigurationError(f"--formats: {', '.join(missing)} not available in this build "
                                 f"(available: {', '.join(have)})")
    return fmts


@dataclass
class ExportResult:
    """What :func:`export_case` wrote: ``files[format]`` = final paths, ``timings_s[format]``."""

    out_dir: Path
    files: dict[str, list[Path]]
    timings_s: dict[str, float]

    @property
    def all_files(self) -> list[Path]:
        return [p for ps in self.files.values() for p in ps]


def parse_formats(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"pdf,sr"`` or a list -> formats in :data:`FORMATS` order; None or ``"all"`` -> all.

    Raises ValueError naming an unknown format.
    """
    if spec is None or spec == "all":
        return FORMATS
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [s for s in items if s not in FORMATS]
    if unknown or not items:
        raise ValueError(f"unknown export format(s) {unknown or spec!r}: choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in items)


def export_case(result: CaseResult, out_dir: str | os.PathLike[str], formats: str | Iterable[str] | None = None, *,
                deidentify: bool = False, ct_path: str | os.PathLike[str] | None = None,
                volume: CTVolume | None = None) -> ExportResult:
    """Write ``result``'s exports in ``formats`` (default all) to ``out_dir``, all or nothing.

    Args:
        result: the analysis result; its ``review`` (the reader's decisions) goes into every format.
        out_dir: the folder (created); existing files of the same names are replaced atomically.
        formats: see :func:`parse_formats`.
        deidentify: PS3.15 basic profile: the pseudonym replaces patient and study identity and
            every source UID is remapped (:mod:`.uids`).
        ct_path / volume: the source CT when the result does not name it (or it moved), or is
            already loaded; only the DICOM formats, the PDF and the key images read it.

    Raises:
        ExportError: a format cannot be written (message names the format and the cause);
            nothing of this export is left in ``out_dir``.
        ValueError: an unknown format.
    """
    fmts = parse_formats(formats)
    writers = _writers()
    missing = [f for f in fmts if f not in writers]
    if missing:
        raise ExportError(f"export format(s) {', '.join(missing)} are not available in this build")
    ctx = ExportContext(result=result, deidentify=deidentify, ct_path=ct_path, volume=volume)
    out = Path(out_dir)
    files: dict[str, list[Path]] = {}
    timings: dict[str, float] = {}
    with StagedWrite(out) as w:
        for fmt in fmts:
            t0 = time.perf_counter()
            try:
                parts = writers[fmt](ctx)
            except ExportError:
                raise
            except Exception as e:  # a writer's failure names its format; StagedWrite removes the staged files
                raise ExportError(f"{fmt} export of case {ctx.case_label!r} failed: {type(e).__name__}: {e}") from e
            files[fmt] = [w.write_bytes(name, data) for name, data in parts]
            timings[fmt] = round(time.perf_counter() - t0, 4)
    return ExportResult(out_dir=out, files=files, timings_s=timings)
