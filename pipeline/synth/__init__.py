"""Synthetic job marketplace with a known true GLMix model (``jobrec synth``).

Public API: :func:`generate_marketplace` (see :mod:`pipeline.synth.generator`).
"""

from pipeline.synth.generator import generate_marketplace

__all__ = ["generate_marketplace"]
