"""The ``lungfuse`` command line (see :mod:`.main`)."""

from lungfuse.app.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
