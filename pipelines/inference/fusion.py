"""The shipped fusion model (3-D CNN + MiniLM adapter, AFA, EAF) at run time: loading it.

Research software, NOT for diagnostic use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lungfuse.models.fusion import FusionModel

__all__ = ["load_fusion"]


def load_fusion(models_dir: Path, verify: bool = True) -> tuple[FusionModel, dict]:
    """Load the shipped fusion model (eval mode, CPU); returns ``(model, meta)``, ``meta`` being
    ``fusion.json``.  Verifies SHA-256 against the manifest."""
    from lungfuse.models.eaf import FusionPolicy
    from lungfuse.models.fusion import FusionModel, FusionModelConfig
    from lungfuse.pipelines.core.resources import verify_manifest
    from lungfuse.pipelines.inference.weights import load_state_into, read_model_json

    pt, js = models_dir / "fusion.pt", models_dir / "fusion.json"
    if verify:
        verify_manifest(pt, js)
    meta = read_model_json(js)
    model = FusionModel(FusionModelConfig.from_dict(meta["config"]), FusionPolicy.from_dict(meta["policy"]))
    load_state_into(model, pt, "cpu")
    model.eval()
    return model, meta
