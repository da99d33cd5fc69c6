"""The consistency calibration at run time: the fitted map from AFA cosine to a pair probability.

Research software, NOT for diagnostic use.

It is a model artefact (``consistency.json`` in the models folder, in the SHA-256 manifest),
fitted on the val split by :func:`lungfuse.pipelines.lab.calibrate.fit_consistency` and loaded
with the other models by :class:`~lungfuse.pipelines.inference.registry.ModelRegistry`; what the
score means and how the threshold is picked is told in :mod:`lungfuse.pipelines.analysis.consistency`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["CALIBRATION_NAME", "RULES_NAME", "ConsistencyCalibration", "RuleCalibration"]

CALIBRATION_NAME = "consistency.json"
RULES_NAME = "rules.json"


@dataclass(frozen=True)
class ConsistencyCalibration:
    """``consistency = sigmoid(slope * cos + intercept)``; realign when below ``threshold``."""

    slope: float = 8.0
    intercept: float = -2.0
    threshold: float = 0.5
    val_auc: float | None = None
    n_val_pairs: int = 0
    fitted: bool = False
    false_alarm: float | None = None
    mismatch_caught: float | None = None
    youden_threshold: float | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.slope) or not np.isfinite(self.intercept):
            raise ValueError("ConsistencyCalibration slope/intercept must be finite")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"ConsistencyCalibration.threshold={self.threshold!r} outside [0, 1]")

    def score(self, cos: float | np.ndarray) -> np.ndarray | float:
        z = self.slope * np.asarray(cos, float) + self.intercept
        out = 1.0 / (1.0 + np.exp(-z))
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ConsistencyCalibration:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class RuleCalibration:
    """The val-calibrated thresholds of the analysis's verdict rules (``rules.json``).

    Attributes:
        missed_nodule_threshold: detector score (the combined detector x FP-classifier score)
            at or above which a >= ``missed_nodule_min_diameter_mm`` finding the report does not
            describe is a ``missed_nodule`` discordance (below it, a flag).  None: the rule falls
            back to the operating threshold (a models folder without ``rules.json``).
        missed_nodule_min_diameter_mm: the size floor of that rule (long axis, mm).
        source: how the threshold was chosen (split, rule, figures: see ``lab.rules_calibration``).
        figures: the val figures behind it (false-alarm rate and share of omitted nodules caught
            per candidate threshold), kept for provenance.
    """

    missed_nodule_threshold: float | None = None
    missed_nodule_min_diameter_mm: float = 6.0
    source: str = "default"
    figures: dict | None = None

    def __post_init__(self) -> None:
        t = self.missed_nodule_threshold
        if t is not None and not 0.0 < float(t) < 1.0:
            raise ValueError(f"RuleCalibration.missed_nodule_threshold={t!r} outside (0, 1)")
        if not self.missed_nodule_min_diameter_mm >= 0:
            raise ValueError("RuleCalibration.missed_nodule_min_diameter_mm must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RuleCalibration:
        return cls(**json.loads(Path(path).read_text()))
