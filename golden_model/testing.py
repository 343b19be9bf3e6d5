"""Small random models, for tests and benches of the golden model and of the RTL.

Weights are drawn from a seeded normal distribution, scaled ``1/sqrt(fan_in)`` so that
activations stay O(1); norm weights are ``1 + 0.1 N(0, 1)`` and biases ``0.1 N(0, 1)``, so
that every parameter matters in a cross-check.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .config import ModelConfig
from .model import Model
from .tokenizer import ByteTokenizer

__all__ = ["tiny_config", "random_weights", "random_model"]


def tiny_config(**overrides) -> ModelConfig:
    """A 2-layer GQA config with a byte vocabulary (overridable field by field)."""
    base = ModelConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=16, intermediate_size=96,
                       rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       attention_bias=False, max_position_embeddings=128, bos_token_id=0,
                       name="tiny-random")
    return replace(base, **overrides)


def random_weights(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random float32 weights for every tensor ``config`` needs."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in config.expected_shapes().items():
        if name.endswith("norm.weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.1 * rng.standard_normal(shape)
        elif name == "embed.weight":
            a = rng.standard_normal(shape)
        else:
            a = rng.standard_normal(shape) / np.sqrt(shape[1])
        out[name] = a.astype(np.float32)
    return out


def random_model(config: ModelConfig | None = None, seed: int = 0) -> Model:
    """A :class:`Model` with :func:`random_weights` and a byte tokenizer (if vocab >= 256)."""
    config = config or tiny_config()
    tok = ByteTokenizer(bos_id=config.bos_token_id) if config.vocab_size >= 256 else None
    return Model(config, random_weights(config, seed), tok, source=f"random(seed={seed})")
