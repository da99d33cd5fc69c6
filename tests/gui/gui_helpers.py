"""Helpers shared by the GUI tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def wait_until(cond: Callable[[], bool], timeout_s: float = 300.0) -> None:
    """Process Qt events until ``cond()`` holds (session fixtures cannot use the function-scoped qtbot)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    assert app is not None
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"condition not met within {timeout_s} s")


def widget_pixels(widget: object) -> np.ndarray:
    """A widget as drawn on screen, as a flat uint8 array."""
    img = widget.grab().toImage()  # type: ignore[attr-defined]
    return np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes()).copy()
