"""Rotary position embedding, in the "rotate half" layout of Hugging Face Llama/Qwen2.

Frequencies ``inv_freq[j] = theta ** (-2j / head_dim)`` (the checkpoint's own ``theta``),
optionally rescaled (``linear``: divided by ``factor``; ``llama3``: the piecewise
wavelength rule of Llama 3.1). Angles are computed in float64 and rounded to float32.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig

__all__ = ["inv_freq", "rope_tables", "apply_rope"]


def inv_freq(config: ModelConfig) -> np.ndarray:
    """float64 (head_dim/2,) rotary frequencies of ``config``."""
    hd = config.head_dim
    inv = 1.0 / config.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rt, rs = config.rope_type, config.rope_scaling or {}
    if rt == "linear":
        inv = inv / float(rs["factor"])
    elif rt == "llama3":
        factor = float(rs["factor"])
        lo, hi = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old = float(rs["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        inv = np.where(medium, smoothed, scaled)
    return inv


def rope_tables(config: ModelConfig, positions) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)``, float32 arrays (T, head_dim) for integer ``positions`` (T,)."""
    ang = np.outer(np.asarray(positions, dtype=np.float64), inv_freq(config))
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate ``x`` (T, heads, head_dim) by per-position tables (T, head_dim)."""
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * cos[:, None, :] + rot * sin[:, None, :]
