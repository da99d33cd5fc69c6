"""What :func:`~lungfuse.pipelines.analysis.analyze.analyze_case` is given: the case and the settings.

Research software, NOT for diagnostic use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lungfuse.pipelines.analysis.consistency import SIZE_TOL_MM, SIZE_TOL_REL
from lungfuse.pipelines.core.errors import ConfigurationError
from lungfuse.pipelines.core.volume import CTVolume
from lungfuse.pipelines.io.report import Report

__all__ = ["AnalysisSettings", "Case"]

#: The report file names looked for beside (or inside) a CT path, in this order.


@dataclass(frozen=True)
class Case:
    """One case: a CT (path or loaded :class:`CTVolume`) and its report.

    ``report``: a path (.txt/.md/DICOM SR), the report text itself, a :class:`Report`, or None.
    With None and ``find_report`` the first of ``report.txt``/``report.md`` beside (or inside)
    the CT path is used; otherwise the case has no report.
    """

    ct: str | os.PathLike[str] | CTVolume
    report: str | os.PathLike[str] | Report | None = None
    case_id: str | None = None
    find_report: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.ct, str | os.PathLike | CTVolume):
            raise TypeError(f"Case.ct must be a path or a CTVolume, got {type(self.ct).__name__}")
        if self.report is not None and not isinstance(self.report, str | os.PathLike | Report):
            raise TypeError(f"Case.report must be a path, text, Report or None, got {type(self.report).__name__}")


@dataclass(frozen=True)
class AnalysisSettings:
    """How :func:`analyze_case` runs.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        detection_threshold: detector score above which a candidate is a finding; None = the
            operating threshold calibrated on val and stored in ``detector.json``.
        candidate_threshold: lowest peak score kept as a candidate (matching, realignment).
        max_findings: at most this many findings (highest scores first).
        realign_max_iter: iterations of the realignment loop (N, default 3).
        realign_min_score: a re-localised candidate needs at least this detector score.
        size_tol_mm, size_tol_rel: the size rule (both must be exceeded).
        explain: compute heatmaps, phrase maps and word attributions.
        max_word_findings: word occlusion for at most this many report-matched findings (it
            re-encodes the report once per word).
        models_dir: weights folder (default ``resources/models``).
        threads: ``torch.set_num_threads`` during the call (None: unchanged).
        amp: float16 autocast for the detector on CUDA.
        sw_batch_size: sliding windows per forward pass (None: 8 on CUDA, 2 on the CPU).
        cache_image: keep the preprocessed grid, lung mask and detector maps of the last two CTs
            in the model registry's image cache, so that analysing the same CT again with another
            report and the same registry (the GUI's "re-check" after a report edit, the tests)
            skips preprocessing and detection.
    """

    device: str = "auto"
    detection_threshold: float | None = None
    candidate_threshold: float = 0.05
    max_findings: int = 8
    realign_max_iter: int = 3
    realign_min_score: float = 0.05
    size_tol_mm: float = SIZE_TOL_MM
    size_tol_rel: float = SIZE_TOL_REL
    explain: bool = True
    max_word_findings: int = 2
    models_dir: str | None = None
    threads: int | None = None
    amp: bool = True
    sw_batch_size: int | None = None
    cache_image: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigurationError(f"AnalysisSettings.device={self.device!r}: expected auto, cpu or cuda")
        for name in ("detection_threshold", "candidate_threshold", "realign_min_score"):
            v = getattr(self, name)
            if v is not None and not 0.0 < float(v) < 1.0:
                raise ConfigurationError(f"AnalysisSettings.{name}={v!r} must lie in (0, 1)")
        for name in ("max_findings", "realign_max_iter", "max_word_findings", "sw_batch_size"):
            v = getattr(self, name)
            if v is None and name == "sw_batch_size":
                continue
            if not isinstance(v, int) or v < (0 if name in ("realign_max_iter", "max_word_findings") else 1):
                raise ConfigurationError(f"AnalysisSettings.{name}={v!r} must be a non-negative integer")
        if self.size_tol_mm < 0 or self.size_tol_rel < 0:
            raise ConfigurationError("AnalysisSettings size tolerances must be >= 0")


