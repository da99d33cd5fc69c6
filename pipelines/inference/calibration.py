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

__all__ = ["CALIBRATION_NAME", "ConsistencyCalibration"]

CALIBRATION_NAME = "consistency.json"


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
