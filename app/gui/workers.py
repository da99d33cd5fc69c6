"""Work off the GUI thread: loading a CT and running :func:`analyze_case`, each in a QThread.

Research software, NOT for diagnostic use.

The GUI thread never runs pipeline code: a :class:`LoadWorker` reads the CT (shown as soon as
it arrives), an :class:`AnalysisWorker` calls the same ``analyze_case`` as the CLI with the
session's one :class:`ModelRegistry` (models load once per session) and a cancel hook that
the Cancel button sets, then maps the result's overlays onto the CT grid (also off the GUI
thread).  Results and errors come back through queued signals.
"""

from __future__ import annotations

import threading
import traceback
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

__all__ = ["LoadWorker", "AnalysisWorker", "ResultLoadWorker", "ExportWorker", "WarmupWorker", "describe_error"]


def describe_error(exc: BaseException, path: str | Path | None) -> str:
    """One message for the error dialog: the file, then what is wrong (a bug keeps its type)."""
    from lungfuse.pipelines.core.errors import LungFuseError

    what = " ".join(str(exc).split()) or type(exc).__name__
    where = f"{path}: " if path and str(path) not in what else ""
    if isinstance(exc, LungFuseError | FileNotFoundError | IsADirectoryError | PermissionError | ValueError):
        return f"{where}{what}"
    return f"{where}internal error (a bug, please report it): {type(exc).__name__}: {what}"


class _Thread(QThread):
    """A QThread that runs ``fn`` and reports through its signals (never raises into Qt)."""

    failed = Signal(str, str)  # message, traceback

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path: str | None = None

    def work(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:  # noqa: BLE001 - every error becomes a dialog, never a crash
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        self.failed.emit(describe_error(exc, self.path), traceback.format_exc())


class LoadWorker(_Thread):
    """Reads the CT at ``path`` (``load_ct_and_series``: DICOM folder, multi-frame file, NIfTI),
    the series ``series_uid`` or else the automatic choice (the axial CT stack with the most
    slices, never a localizer).  ``loaded(volume, series)``: series = every image stack of a
    folder (``SeriesInfo``, largest first; empty for a file), for the window's series chooser."""

    loaded = Signal(object, object)  # CTVolume, list[SeriesInfo]

    def __init__(self, path: str, series_uid: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = path
        self.series_uid = series_uid

    def work(self) -> None:
        from lungfuse.pipelines.io.dicom import load_ct_and_series

        assert self.path is not None
        vol, series = load_ct_and_series(self.path, series_uid=self.series_uid)
        self.loaded.emit(vol, series)


class AnalysisWorker(_Thread):
    """Runs ``analyze_case`` and builds the overlays; :meth:`cancel` stops it at the next check.

    Signals: ``progress(stage, i, n)`` from ``analyze_case``'s callback, ``finished_result(result,
    overlays)`` and ``cancelled()``; ``failed(message, traceback)`` for any other error.
    """

    progress = Signal(str, int, int)
    finished_result = Signal(object, object)
    cancelled = Signal()

    def __init__(self, case: Any, settings: Any, registry: Any, volume: Any, save_to: Path | None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.case, self.settings, self.registry, self.volume = case, settings, registry, volume
        self.save_to = save_to
        self.path = str(case.ct) if not hasattr(case.ct, "hu") else None
        self._stop = threading.Event()

    def cancel(self) -> None:
        """Ask the analysis to stop (``analyze_case`` checks between stages and inside its loops)."""
        self._stop.set()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def work(self) -> None:
        import numpy as np

        from lungfuse.app.gui.scene import build_overlays
        from lungfuse.pipelines.analysis.analyze import analyze_case
        from lungfuse.pipelines.core.errors import AnalysisCancelled

        try:
            result = analyze_case(self.case, self.settings, progress=self.progress.emit, models=self.registry,
                                  cancel=self._stop.is_set)
        except AnalysisCancelled:
            self.cancelled.emit()
            return
        if self._stop.is_set():
            self.cancelled.emit()
            return
        if self.save_to is not None:
            result.save(self.save_to)
        overlays = build_overlays(result.findings, result.arrays, np.asarray(self.volume.affine),
                                  tuple(self.volume.shape))
        self.finished_result.emit(result, overlays)


class ResultLoadWorker(_Thread):
    """Loads a saved result (JSON + NPZ + review sidecar) and builds its overlays on ``volume``."""

    finished_result = Signal(object, object)

    def __init__(self, json_path: str, volume: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = json_path
        self.volume = volume

    def work(self) -> None:
        import numpy as np

        from lungfuse.app.gui.scene import build_overlays
        from lungfuse.pipelines.analysis.result import CaseResult

        assert self.path is not None
        result = CaseResult.load(self.path)
        overlays = build_overlays(result.findings, result.arrays, np.asarray(self.volume.affine),
                                  tuple(self.volume.shape))
        self.finished_result.emit(result, overlays)


class ExportWorker(_Thread):
    """Runs :func:`lungfuse.pipelines.export.export_case` (all or nothing) off the GUI thread.

    ``exported(ExportResult)`` when every format was written; ``failed(message, traceback)``
    otherwise (nothing of the export is left in ``out_dir``).  The result's review goes along.
    """

    exported = Signal(object)

    def __init__(self, result: Any, out_dir: str, formats: list[str], volume: Any, ct_path: str | None,
                 deidentify: bool = False, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.result, self.out_dir, self.formats = result, out_dir, list(formats)
        self.volume, self.ct_path, self.deidentify = volume, ct_path, deidentify
        self.path = out_dir

    def work(self) -> None:
        from lungfuse.pipelines.export import export_case

        out = export_case(self.result, self.out_dir, self.formats, deidentify=self.deidentify,
                          ct_path=self.ct_path, volume=self.volume)
        self.exported.emit(out)


class WarmupWorker(_Thread):
    """Imports the analysis code and loads the models into the session's registry in the background.

    The first ``registry.get`` imports about 3,000 modules (MONAI, transformers, scipy, ...):
    about 13 s on the 2-core machine.  Imports hold the GIL for up to ~0.7 s at a time
    (unmarshalling large modules), so done during the first analysis they froze the window for
    that long (bench/bench_gui.py).  Started when the window opens, they are over before the
    reader has chosen a case; an analysis started earlier simply waits on the registry's lock.
    ``ready(str)`` says what was loaded.
    """

    ready = Signal(str)

    def __init__(self, registry: Any, device: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.registry, self.device = registry, device

    def work(self) -> None:
        import time

        t0 = time.perf_counter()
        import torch

        import lungfuse.pipelines.analysis.analyze  # noqa: F401 - the import is the work

        if self.device == "auto":  # as analyze_case resolves it
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        models = self.registry.get(None, self.device)
        models.text_encoder()
        self.ready.emit(f"models loaded on {self.device} in {time.perf_counter() - t0:.1f} s")
