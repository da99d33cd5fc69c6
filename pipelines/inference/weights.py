"""Reading the shipped model files: a missing, unreadable or mismatched one is a ModelIntegrityError naming it.

The SHA-256 check against the manifest is :func:`lungfuse.pipelines.core.resources.verify_manifest`;
these readers cover what it cannot see (a config missing beside its weights, weights that do not
decode or do not fit the network their config describes), so a damaged model folder is reported
as bad setup (``lungfuse`` exit code 2), not as a bug.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from lungfuse.pipelines.core.errors import ModelIntegrityError

__all__ = ["load_state_into", "read_model_json"]


def read_model_json(path: Path) -> dict[str, Any]:
    """The JSON config / metadata file of a model (``detector.json``, ``fpr.json``, ``fusion.json``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelIntegrityError(f"{path}: model config missing", path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelIntegrityError(f"{path}: unreadable model config ({type(exc).__name__}: {exc})", path) from exc


def load_state_into(model: torch.nn.Module, path: Path, device: str = "cpu") -> None:
    """Load the state dict in ``path`` into ``model`` (``torch.load(weights_only=True)``, strict)."""
    path = Path(path)
    if not path.is_file():
        raise ModelIntegrityError(f"{path}: weight file missing", path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError) as exc:
        # torch reports a damaged archive as RuntimeError / UnpicklingError
        raise ModelIntegrityError(f"{path}: unreadable weight file ({type(exc).__name__}: {exc})", path) from exc
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:  # missing/unexpected keys, shape mismatches
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelIntegrityError(f"{path}: weights do not fit the network of their config ({first})", path) from exc
