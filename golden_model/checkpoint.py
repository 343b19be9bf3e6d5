"""Checkpoints in safetensors: the project's own format and Hugging Face folders.

*Project format* (what ``scripts/train_code_model.py`` writes; the shipped model): a folder
with ``config.json`` (``"format": "sparktile-llama"``, keys of
:meth:`ModelConfig.from_sparktile`) and ``model.safetensors`` whose tensors carry the
internal names listed in :mod:`sparktile.golden_model.config`. ``"tokenizer": "bytes"``
selects the byte-level tokenizer, ``"tokenizer.json"`` a file beside it.

*Hugging Face folder* of a ``LlamaForCausalLM`` or ``Qwen2ForCausalLM``: ``config.json``,
``model.safetensors`` or a sharded ``model.safetensors.index.json``, and ``tokenizer.json``
(optional: without it the model works on token ids only). Tensor names are mapped to the
internal ones; Hugging Face already stores q/k in the rotate-half layout used here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .safetensors_io import read_safetensors, read_sharded
from .tokenizer import ByteTokenizer, HFTokenizer

__all__ = ["load_sparktile_folder", "load_hf_folder", "save_sparktile_folder", "validate_weights",
           "hf_to_internal", "internal_to_hf"]

_HF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "mlp_norm.weight",
    "self_attn.q_proj.weight": "attn.q.weight",
    "self_attn.k_proj.weight": "attn.k.weight",
    "self_attn.v_proj.weight": "attn.v.weight",
    "self_attn.o_proj.weight": "attn.o.weight",
    "self_attn.q_proj.bias": "attn.q.bias",
    "self_attn.k_proj.bias": "attn.k.bias",
    "self_attn.v_proj.bias": "attn.v.bias",
    "mlp.gate_proj.weight": "mlp.gate.weight",
    "mlp.up_proj.weight": "mlp.up.weight",
    "mlp.down_proj.weight": "mlp.down.weight",
}
_HF_TOP = {"model.embed_tokens.weight": "embed.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "head.weight"}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


def validate_weights(config: ModelConfig, weights: dict, source: str) -> dict[str, np.ndarray]:
    """Check that ``weights`` holds every tensor ``config`` needs, with the right shape.

    Returns the needed tensors as C-contiguous float32 arrays (extra tensors dropped).

    Raises
    ------
    ValueError
        Naming ``source`` and the first missing or misshapen tensor.
    """
    out = {}
    for name, shape in config.expected_shapes().items():
        if name not in weights:
            raise ValueError(f"{source}: tensor {name!r} is missing (config {config.name!r} "
                             f"needs shape {shape})")
        w = weights[name]
        if tuple(w.shape) != shape:
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(w.shape)} but the "
                             f"config says {shape}")
        out[name] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def hf_to_internal(tensors: dict, source: str) -> dict[str, np.ndarray]:
    """Rename Hugging Face Llama/Qwen2 tensors to internal names (unknown names dropped)."""
    out = {}
    for name, t in tensors.items():
        if name in _HF_TOP:
            out[_HF_TOP[name]] = t
            continue
        m = _LAYER_RE.fullmatch(name)
        if m and m.group(2) in _HF_LAYER:
            out[f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}"] = t
    return out


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def load_sparktile_folder(folder) -> tuple[ModelConfig, dict, object]:
    """Load a project-format folder: ``(config, weights, tokenizer)``."""
    folder = Path(folder)
    raw = _read_config(folder)
    config = ModelConfig.from_sparktile(raw, source=str(folder / "config.json"))
    st = folder / "model.safetensors"
    if not st.exists():
        raise FileNotFoundError(f"{folder}: model.safetensors not found")
    weights = validate_weights(config, read_safetensors(st), str(st))
    kind = raw.get("tokenizer", "bytes")
    if kind == "bytes":
        if config.vocab_size < 256:
            raise ValueError(f"{folder / 'config.json'}: a byte tokenizer needs vocab_size "
                             f">= 256, not {config.vocab_size}")
        tok = ByteTokenizer(bos_id=config.bos_token_id, eos_ids=config.eos_token_ids)
    else:
        tok = HFTokenizer.from_file(folder / kind, bos_id=config.bos_token_id,
                                    eos_ids=config.eos_token_ids,
                                    add_bos=config.bos_token_id is not None)
    return config, weights, tok


def load_hf_folder(folder) -> tuple[ModelConfig, dict, object]:
    """Load a Hugging Face Llama/Qwen2 folder: ``(config, weights, tokenizer or None)``."""
    folder = Path(folder)
    config = ModelConfig.from_hf(_read_config(folder), source=str(folder / "config.json"))
    tensors = hf_to_internal(read_sharded(folder), str(folder))
    if config.tie_word_embeddings:
        tensors.pop("head.weight", None)
    src = str(folder / ("model.safetensors" if (folder / "model.safetensors").exists()
                        else "model.safetensors.index.json"))
    weights = validate_weights(config, tensors, src)
    tok = None
    tj = folder / "tokenizer.json"
    if tj.exists():
        add_bos = False
        tc = folder / "tokenizer_config.json"
        if tc.exists():
            add_bos = bool(json.loads(tc.read_text()).get("add_bos_token", False))
        tok = HFTokenizer.from_file(tj, bos_id=config.bos_token_id,
                                    eos_ids=config.eos_token_ids, add_bos=add_bos)
    return config, weights, tok


def internal_to_hf(weights: dict) -> dict[str, np.ndarray]:
    """Inverse of :func:`hf_to_internal`: internal names to Hugging Face Llama/Qwen2 names."""
    top = {v: k for k, v in _HF_TOP.items()}
    layer = {v: k for k, v in _HF_LAYER.items()}
    out = {}
    for name, t in weights.items():
        if name in top:
            out[top[name]] = t
            continue
        _, i, rest = name.split(".", 2)
        out[f"model.layers.{i}.{layer[rest]}"] = t
    return out


def save_sparktile_folder(folder, config: ModelConfig, weights: dict,
                          tokenizer: str = "bytes", extra: dict | None = None) -> None:
    """Write a project-format folder (``config.json`` + ``model.safetensors``).

    ``tokenizer`` is ``"bytes"`` or the name of a ``tokenizer.json`` already in the folder;
    ``extra`` adds keys to ``config.json`` (e.g. training provenance).
    """
    from .safetensors_io import write_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w = validate_weights(config, weights, "save_sparktile_folder")
    cfg = {
        "format": "sparktile-llama", "format_version": 1, "name": config.name,
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_layers": config.num_layers, "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size, "rope_theta": config.rope_theta,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias,
        "max_position_embeddings": config.max_position_embeddings,
        "bos_token_id": config.bos_token_id, "eos_token_id": list(config.eos_token_ids),
        "rope_scaling": config.rope_scaling, "tokenizer": tokenizer,
    }
    cfg.update(extra or {})
    write_safetensors(folder / "model.safetensors", w,
                      metadata={"format": "sparktile-llama", "name": config.name})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
