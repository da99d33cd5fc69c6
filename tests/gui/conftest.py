"""GUI tests run offscreen: no display is needed (set before Qt is first imported)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
