"""The errors LungFuse raises on purpose, one hierarchy under :class:`LungFuseError`.

Research software, NOT for diagnostic use.

Every error here is about the *input or the setup*, never a bug: the CLI prints one of them as a
single line naming the file and exits with code 2, while anything else is treated as a bug (its
traceback is logged and the exit code is 1).  Each class keeps the built-in base it replaces
(``ValueError`` or ``RuntimeError``), so callers that caught those keep working.

* :class:`InputError` - a file the user handed in cannot be used: :class:`IngestError` (CT/DICOM/
  NIfTI), :class:`ReportError` (the radiology report).
* :class:`ModelIntegrityError` - shipped weights missing, or not the bytes the manifest names.
* :class:`DataLeakageError` - a guard that keeps test patients out of training and tuning fired.
* :class:`ConfigurationError` - settings or arguments that cannot work together.
* :class:`AnalysisCancelled` - the caller cancelled a running analysis.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "LungFuseError",
    "InputError",
    "IngestError",
    "ReportError",
    "ModelIntegrityError",
    "DataLeakageError",
    "ConfigurationError",
    "AnalysisCancelled",
]


class LungFuseError(Exception):
    """Base of the errors LungFuse raises on purpose (bad input or setup, not a bug).

    ``path`` (optional) is the file or folder the error is about; :meth:`__str__` names it
    when the message does not already.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:
        msg = super().__str__()
        if self.path is not None and str(self.path) not in msg:
            return f"{self.path}: {msg}"
        return msg


class InputError(LungFuseError, ValueError):
    """An input file (CT, report) cannot be used as it is."""


class IngestError(InputError):
    """A CT input (DICOM folder or file, NIfTI) cannot be read into a volume."""


class ReportError(InputError):
    """A radiology report cannot be read (not text, unreadable DICOM SR, missing file)."""


class ModelIntegrityError(LungFuseError, RuntimeError):
    """Shipped model files are missing or do not match their SHA-256 manifest."""


class DataLeakageError(LungFuseError, RuntimeError):
    """A guard against training, tuning or calibrating on held-out (test) data fired."""


class ConfigurationError(LungFuseError, ValueError):
    """Settings or arguments that cannot work together (or name something that does not exist)."""


class AnalysisCancelled(LungFuseError):
    """A running analysis was cancelled by its caller (``analyze_case(..., cancel=...)``); nothing
    was written."""
