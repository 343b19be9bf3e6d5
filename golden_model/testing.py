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

__all__ = ["tiny_config", "random_weights", "random_model", "write_gguf"]


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


def write_gguf(path, config: ModelConfig | None = None, weights: dict | None = None,
               tokens: list[str] | None = None, chat_template: str | None = None) -> None:
    """Write a llama.cpp-style GGUF file of ``config`` / ``weights`` (F32 tensors).

    Laid out as llama.cpp's converter writes it (``blk.N.*`` names, q/k rows permuted for
    its interleaved rotary kernel), with a byte-level BPE vocabulary of ``tokens`` (default:
    ``config.vocab_size`` made-up tokens and one merge), so :func:`~.gguf_loader.load_gguf`
    reads it back, and ``chat_template`` as ``tokenizer.chat_template``. Small files of this
    kind are what the fuzz tests mutate.
    """
    from gguf import GGUFWriter

    from .gguf_loader import _GGUF_LAYER, _GGUF_TOP, permute_qk

    config = config or tiny_config()
    weights = weights if weights is not None else random_weights(config)
    if tokens is None:
        tokens = ["a", "b", "ab"] + [f"t{i}" for i in range(config.vocab_size - 3)]
    w = GGUFWriter(str(path), "llama")
    w.add_name(config.name)
    w.add_block_count(config.num_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_rope_dimension_count(config.head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(["a b"])
    if chat_template is not None:
        w.add_chat_template(chat_template)
    if config.bos_token_id is not None:
        w.add_bos_token_id(config.bos_token_id)
    if config.eos_token_ids:
        w.add_eos_token_id(config.eos_token_ids[0])
    top = {v: k for k, v in _GGUF_TOP.items()}
    layer = {v: k for k, v in _GGUF_LAYER.items()}
    for name, t in weights.items():
        if name in top:
            gname = top[name]
        else:
            _, i, rest = name.split(".", 2)
            gname = f"blk.{i}.{layer[rest]}"
        t = np.asarray(t, np.float32)
        if name.endswith(("attn.q.weight", "attn.q.bias")):
            t = permute_qk(t, config.num_heads)
        elif name.endswith(("attn.k.weight", "attn.k.bias")):
            t = permute_qk(t, config.num_kv_heads)
        w.add_tensor(gname, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
