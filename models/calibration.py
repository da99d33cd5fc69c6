"""Post-hoc probability calibration: temperature scaling and expected calibration error.

Binary logits ``(N,)`` map to probabilities by ``sigmoid(logit / T)``; multi-class logits
``(N, K)`` by ``softmax(logits / T)``. One scalar T is fitted on the validation split
(Guo et al., 2017); it changes confidence, never the ranking, so AUC is unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TemperatureScaler", "expected_calibration_error"]

_T_MIN, _T_MAX = 0.05, 20.0


def _as_tensor(
    x: np.ndarray | torch.Tensor | list[float], dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    t = x.detach() if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return t.to(device="cpu", dtype=dtype)


class TemperatureScaler:
    """One temperature for a model's logits.

    ``fit(logits, labels)`` minimises the validation NLL over ``log T`` with LBFGS (T is
    kept in [0.05, 20]); ``transform(logits)`` returns calibrated probabilities (numpy).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    @staticmethod
    def nll(
        logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, temperature: float = 1.0
    ) -> float:
        """Mean negative log-likelihood of ``labels`` under ``logits / temperature``."""
        z = _as_tensor(logits) / temperature
        return float(TemperatureScaler._nll_t(z, labels))

    @staticmethod
    def _nll_t(z: torch.Tensor, labels: np.ndarray | torch.Tensor) -> torch.Tensor:
        if z.ndim == 1:
            return F.binary_cross_entropy_with_logits(z, _as_tensor(labels).reshape(-1))
        return F.cross_entropy(z, _as_tensor(labels, torch.long).reshape(-1))

    def fit(
        self, logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, max_iter: int = 100
    ) -> TemperatureScaler:
        """Fit T on validation ``logits`` ``(N,)`` / ``(N, K)`` and ``labels`` ``(N,)``; returns self."""
        z = _as_tensor(logits)
        if z.ndim not in (1, 2) or z.shape[0] == 0:
            raise ValueError("logits must be (N,) or (N, K) with N > 0")
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            t = log_t.clamp(math.log(_T_MIN), math.log(_T_MAX)).exp()
            loss = self._nll_t(z / t, labels)
            loss.backward()
            return loss

        opt.step(closure)
        t = float(log_t.detach().clamp(math.log(_T_MIN), math.log(_T_MAX)).exp())
        # Never return a temperature that is worse than doing nothing (LBFGS can stall).
        if self.nll(z, labels, t) <= self.nll(z, labels, 1.0):
            self.temperature = t
        else:
            self.temperature = 1.0
        return self

    def transform(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated probabilities: ``(N,)`` for binary logits, ``(N, K)`` for multi-class."""
        z = _as_tensor(logits) / self.temperature
        p = torch.sigmoid(z) if z.ndim <= 1 else torch.softmax(z, dim=-1)
        return p.numpy()

    def to_dict(self) -> dict[str, float]:
        return {"temperature": self.temperature}

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> TemperatureScaler:
        return cls(float(d["temperature"]))


def expected_calibration_error(
    probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, n_bins: int = 10
) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins on [0, 1].

    * binary: ``probs`` ``(N,)`` = P(positive); ECE = sum over bins of
      ``|bin| / N * |mean(labels) - mean(probs)|`` (the reliability-diagram gap).
    * multi-class: ``probs`` ``(N, K)``; uses the max probability as confidence and
      whether the argmax equals the label as accuracy.
    """
    p = _as_tensor(probs).numpy()
    y = _as_tensor(labels).numpy().reshape(-1)
    if p.ndim == 2:
        conf = p.max(axis=1)
        hit = (p.argmax(axis=1) == y).astype(float)
    else:
        conf = p.reshape(-1)
        hit = y.astype(float)
    if conf.size == 0:
        return 0.0
    # Bin i holds (edge_i, edge_{i+1}]; 0 goes to the first bin.
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(hit[sel].mean() - conf[sel].mean())
    return float(ece)
