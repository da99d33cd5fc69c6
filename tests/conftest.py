"""Shared pytest fixtures.

``lidc_root``: the three real LIDC-IDRI cases, unpacked by ``../shared/data/get-lidc``
(idempotent); tests that need them skip with a clear message only where
``../shared`` is absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
GET_LIDC = REPO.parent / "shared" / "data" / "get-lidc"


@pytest.fixture(scope="session")
def lidc_root() -> Path:
    if not GET_LIDC.exists():
        pytest.skip(f"real LIDC-IDRI cases unavailable: {GET_LIDC} not found (../shared absent)")
    out = subprocess.run([str(GET_LIDC)], check=True, capture_output=True, text=True).stdout.strip()
    root = Path(out.splitlines()[-1])
    assert (root / "LIDC-IDRI-0001" / "ct").is_dir(), f"get-lidc printed {root}, which lacks LIDC-IDRI-0001/ct"
    return root
