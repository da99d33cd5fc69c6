"""Where LungFuse finds its shipped resources (model weights and their manifest, demo shapes).

The repository's top-level ``resources/`` folder is the home of the weights
(``resources/models/``) with a SHA-256 manifest, ``manifest.json``:
``{"files": {"name.pt": {"sha256": "...", "bytes": N, "description": "..."}}}``.
It is installed as the package ``lungfuse.resources`` (package data of the wheel), so
:func:`resources_dir` finds it with :mod:`importlib.resources` in a wheel install, an
editable install and a source checkout alike.  ``LUNGFUSE_RESOURCES`` overrides the location.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lungfuse.pipelines.core.errors import ModelIntegrityError

__all__ = ["RESOURCES_PACKAGE", "resources_dir", "models_dir", "WeightFile", "list_weights", "sha256_file",
           "write_manifest_entry", "verify_manifest", "cache_dir"]


#: The package that holds the shipped data (the repository's ``resources/`` folder).
RESOURCES_PACKAGE = "lungfuse.resources"


def resources_dir() -> Path:
    """The folder of the shipped data: ``$LUNGFUSE_RESOURCES``, else the ``lungfuse.resources`` package.

    The package is the wheel's copy in an install, the repository's ``resources/`` folder in an
    editable install.  A checkout whose editable install predates that package (or plain
    ``PYTHONPATH`` use) falls back to the ``resources/`` folder beside ``pipelines/``.
    """
    env = os.environ.get("LUNGFUSE_RESOURCES")
    if env:
        return Path(env)
    return _package_dir(RESOURCES_PACKAGE) or Path(__file__).resolve().parents[2] / "resources"


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package on disk, or None when it is absent (or not a folder)."""
    from importlib import resources

    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        return None
    # Wheels are installed unpacked, so the package is a folder: a pathlib.Path.
    return root if isinstance(root, Path) and root.is_dir() else None


def models_dir() -> Path:
    """The folder of the shipped weights and their ``manifest.json`` (``resources_dir() / "models"``)."""
    return resources_dir() / "models"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class WeightFile:
    """A weight file found on disk, with its manifest entry (if any)."""

    name: str
    path: Path
    bytes: int
    sha256: str
    expected_sha256: str | None

    @property
    def verified(self) -> bool:
        return self.expected_sha256 is not None and self.expected_sha256 == self.sha256


def list_weights() -> list[WeightFile]:
    """Every weight file in ``models_dir()`` with its measured and expected SHA-256."""
    mdir = models_dir()
    manifest_path = mdir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())["files"] if manifest_path.exists() else {}
    out = []
    if mdir.exists():
        for p in sorted(mdir.iterdir()):
            if p.suffix in (".pt", ".pth", ".safetensors", ".npz", ".json") and p.name != "manifest.json":
                entry = manifest.get(p.name, {})
                out.append(WeightFile(p.name, p, p.stat().st_size, sha256_file(p), entry.get("sha256")))
    return out


def write_manifest_entry(models: Path, name: str, description: str) -> None:
    """Record ``models/name``'s SHA-256 and size in ``models/manifest.json`` (created when missing)."""
    p = Path(models) / name
    man_path = Path(models) / "manifest.json"
    manifest = json.loads(man_path.read_text()) if man_path.exists() else {"files": {}}
    manifest["files"][name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size, "description": description}
    man_path.write_text(json.dumps(manifest, indent=2) + "\n")


def verify_manifest(*paths: Path) -> None:
    """Check each weight file against the ``manifest.json`` beside it.

    Raises:
        ModelIntegrityError: naming the file, when it is missing, or when its SHA-256 differs
            from its manifest entry (or the manifest is missing, unreadable or has no entry).
    """
    for p in paths:
        p = Path(p)
        man_path = p.parent / "manifest.json"
        if not p.is_file():
            raise ModelIntegrityError(f"{p}: weight file missing (expected beside {man_path})", p)
        try:
            manifest = json.loads(man_path.read_text())["files"] if man_path.exists() else {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelIntegrityError(f"{man_path}: unreadable manifest ({type(exc).__name__}: {exc})",
                                      man_path) from exc
        if manifest.get(p.name, {}).get("sha256") != sha256_file(p):
            raise ModelIntegrityError(f"{p}: SHA-256 does not match {man_path}", p)


def cache_dir() -> Path:
    """Where generated data is cached (gitignored, never committed)."""
    return Path(os.environ.get("LUNGFUSE_CACHE", Path.home() / ".cache" / "lungfuse"))
