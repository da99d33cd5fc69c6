"""Exports of a CaseResult (issue 23): :func:`export_case` writes JSON, CSV, PDF, DICOM SR/SEG/SC.

Research software, NOT for diagnostic use.  Layer: above ``analysis`` (no Qt).
"""

from lungfuse.pipelines.export.api import DICOM_FORMATS, FORMATS, ExportResult, export_case, parse_formats

__all__ = ["DICOM_FORMATS", "FORMATS", "ExportResult", "export_case", "parse_formats"]
