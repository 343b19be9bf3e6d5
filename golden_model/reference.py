"""Hugging Face ``transformers`` twins of golden models (optional ``reference`` extra).

Used by the cross-check tests and the decode benchmark: :func:`to_transformers` builds a
``LlamaForCausalLM`` (or ``Qwen2ForCausalLM`` when the q/k/v projections have biases) with
exactly the golden model's float32 weights.
"""

from __future__ import annotations

import numpy as np

from .checkpoint import internal_to_hf
from .config import ModelConfig

__all__ = ["hf_config", "to_transformers"]


def hf_config(config: ModelConfig):
    """The ``transformers`` config equivalent to ``config``."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=config.tie_word_embeddings,
        max_position_embeddings=config.max_position_embeddings,
        rope_theta=config.rope_theta, bos_token_id=config.bos_token_id,
        eos_token_id=list(config.eos_token_ids) or None)
    if config.rope_scaling:
        common["rope_scaling"] = dict(config.rope_scaling)
    if config.attention_bias:
        if config.head_dim * config.num_heads != config.hidden_size:
            raise ValueError("Qwen2Config cannot express head_dim != hidden_size / num_heads "
                             f"({config.head_dim} vs {config.hidden_size}/{config.num_heads})")
        return Qwen2Config(**common)
    return LlamaConfig(head_dim=config.head_dim, attention_bias=False, mlp_bias=False,
                       **common)


def to_transformers(model):
    """A float32 ``transformers`` model in eval mode with ``model``'s weights."""
    import torch
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    cfg = hf_config(model.config)
    cls = Qwen2ForCausalLM if model.config.attention_bias else LlamaForCausalLM
    hf = cls(cfg).eval().float()
    state = {k: torch.from_numpy(np.array(v, np.float32))
             for k, v in internal_to_hf(model.weights).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (model.config.tie_word_embeddings
                                          and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"to_transformers: missing {missing}, unexpected {unexpected}")
    if model.config.tie_word_embeddings:
        hf.tie_weights()
    return hf
