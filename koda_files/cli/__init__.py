"""The `koda-files` command: a thin layer over koda_files' public API."""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
