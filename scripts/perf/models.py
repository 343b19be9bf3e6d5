"""Model shapes for the performance model: presets by name, or a ``config.json`` by path.

Only the shapes matter here (no weights): they set the matrices of a decoder layer, the
weight bytes and the KV cache per token, in the data type the wafer stores them in.
"""

from __future__ import annotations

import json
from pathlib import Path

from sparktile.errors import UserError

from ...golden_model.config import ModelConfig

__all__ = ["MODELS", "DTYPES", "ModelError", "load_model_config", "model_params",
           "layer_matrices", "kv_bytes_per_token", "weight_bytes"]

#: Bytes per weight / KV element.
DTYPES = {"fp16": 2, "int8": 1}


class ModelError(UserError, ValueError):
    """An unknown model preset or an unreadable config.json."""


def _hf(source: str, **d) -> tuple[dict, str]:
    return d, source


#: name -> (Hugging Face config.json fields that set the shapes, source).
MODELS: dict[str, tuple[dict, str] | None] = {
    "sparktile-code-tiny": None,  # the shipped model: golden_model/data/config.json
    "llama-3.1-8b": _hf(
        "huggingface.co/meta-llama/Llama-3.1-8B config.json",
        model_type="llama", vocab_size=128256, hidden_size=4096, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, _name_or_path="llama-3.1-8b"),
    "llama-3.1-70b": _hf(
        "huggingface.co/meta-llama/Llama-3.1-70B config.json",
        model_type="llama", vocab_size=128256, hidden_size=8192, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, intermediate_size=28672,
        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, _name_or_path="llama-3.1-70b"),
    "qwen2.5-coder-7b": _hf(
        "huggingface.co/Qwen/Qwen2.5-Coder-7B config.json (7.61B parameters, 28 layers, GQA "
        "28/4 per its model card)",
        model_type="qwen2", vocab_size=152064, hidden_size=3584, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, intermediate_size=18944,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, _name_or_path="qwen2.5-coder-7b"),
    "qwen2.5-coder-32b": _hf(
        "huggingface.co/Qwen/Qwen2.5-Coder-32B config.json (64 layers, GQA 40/8)",
        model_type="qwen2", vocab_size=152064, hidden_size=5120, num_hidden_layers=64,
        num_attention_heads=40, num_key_value_heads=8, intermediate_size=27648,
        max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, _name_or_path="qwen2.5-coder-32b"),
}


def load_model_config(name_or_path: str) -> tuple[ModelConfig, str]:
    """A preset name or a Hugging Face ``config.json`` path (or its folder) -> (config, source)."""
    if name_or_path in MODELS:
        entry = MODELS[name_or_path]
        if entry is None:
            from importlib.resources import files
            text = files("sparktile.golden_model").joinpath("data/config.json").read_text()
            cfg = ModelConfig.from_sparktile(json.loads(text), "golden_model/data/config.json")
            return cfg, "golden_model/data/config.json (the shipped model)"
        d, source = entry
        return ModelConfig.from_hf(dict(d), source), source
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(f"unknown model {name_or_path!r}: not a preset ({', '.join(MODELS)}) "
                         f"and not a config.json file")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(d, dict):
        raise ModelError(f"{path}: a config.json must hold a JSON object")
    try:
        if d.get("format") == "sparktile-llama":
            return ModelConfig.from_sparktile(d, str(path)), str(path)
        return ModelConfig.from_hf(d, str(path)), str(path)
    except (ValueError, TypeError) as exc:
        raise ModelError(str(exc)) from None


def model_params(cfg: ModelConfig) -> int:
    """Parameters of the matrices (embedding counted once when tied; norms ignored)."""
    d, qd, kvd, f = cfg.hidden_size, cfg.num_heads * cfg.head_dim, \
        cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size
    layer = qd * d + 2 * kvd * d + d * qd + 3 * f * d
    return cfg.num_layers * layer + cfg.vocab_size * d * (1 if cfg.tie_word_embeddings else 2)


def layer_matrices(cfg: ModelConfig) -> list[tuple[str, int, int]]:
    d, hd, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    qd, kvd = cfg.num_heads * hd, cfg.num_kv_heads * hd
    return [("q", qd, d), ("k", kvd, d), ("v", kvd, d), ("o", d, qd),
            ("gate", f, d), ("up", f, d), ("down", d, f)]


def kv_bytes_per_token(cfg: ModelConfig, dtype: str) -> int:
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * DTYPES[dtype]


def weight_bytes(cfg: ModelConfig, dtype: str) -> int:
    return model_params(cfg) * DTYPES[dtype]
