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

from sparktile.errors import one_line

from .chat import for_tokenizer, read_hf_template
from .config import ModelConfig
from .errors import CheckpointError, CheckpointNotFound
from .paths import inside
from .safetensors_io import read_safetensors, read_sharded
from .tokenizer import ByteTokenizer, HFTokenizer

__all__ = ["load_sparktile_folder", "load_hf_folder", "save_sparktile_folder", "validate_weights",
           "hf_to_internal", "internal_to_hf", "read_config", "read_json"]

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


_INTERNAL_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_INTERNAL_TOP = ("embed.weight", "norm.weight", "head.weight")
#: Internal names of a layer's tensors after ``layers.{i}.``, the optional ones included.
_LAYER_PARTS = frozenset(_HF_LAYER.values())


def validate_weights(config: ModelConfig, weights: dict, source: str) -> dict[str, np.ndarray]:
    """Check that ``weights`` holds every tensor ``config`` needs, with the right shape, and
    no model tensor it does not use.

    A tensor with a model name that the config does not need means the two disagree (a
    ``num_layers`` smaller than the file's, biases with ``attention_bias`` false, a head
    with tied embeddings); using the config anyway would silently compute another model,
    so that is an error too. Names that are not model tensors are ignored. Values must be
    finite: a NaN weight would only show up as NaN logits much later.

    Returns the needed tensors as C-contiguous float32 arrays.

    Raises
    ------
    CheckpointError
        Naming ``source`` and the first missing, misshapen, unused or non-finite tensor.
    """
    shapes = config.expected_shapes()
    layers = sorted({int(m.group(1)) for n in weights
                     if (m := _INTERNAL_LAYER.fullmatch(n))})
    if layers and layers[-1] >= config.num_layers:
        raise CheckpointError(
            f"{source}: the file has tensors of {layers[-1] + 1} layers but the config says "
            f"num_layers {config.num_layers}; fix num_layers (or the file)")
    for name in weights:
        m = _INTERNAL_LAYER.fullmatch(name)
        known = name in _INTERNAL_TOP or (m and m.group(2) in _LAYER_PARTS)
        if known and name not in shapes:
            why = ("tie_word_embeddings is true" if name == "head.weight" else
                   "attention_bias is false" if name.endswith(".bias") else "it is not used")
            raise CheckpointError(f"{source}: tensor {name!r} is in the file but the config "
                                  f"does not use it ({why}); the config and the file disagree")
    out = {}
    for name, shape in shapes.items():
        if name not in weights:
            raise CheckpointError(f"{source}: tensor {name!r} is missing (config "
                                  f"{config.name!r} needs shape {shape})")
        w = weights[name]
        if tuple(w.shape) != shape:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(w.shape)} but "
                                  f"the config says {shape}")
        if w.dtype.kind not in "fiub":
            raise CheckpointError(f"{source}: tensor {name!r} has dtype {w.dtype}; a weight "
                                  "must be a number")
        a = np.ascontiguousarray(w, dtype=np.float32)
        if not np.isfinite(a).all():
            raise CheckpointError(f"{source}: tensor {name!r} holds non-finite values (NaN or "
                                  "inf); corrupt file?")
        out[name] = a
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


def read_json(path: Path, what: str = "") -> object:
    """The JSON value in ``path``; a missing, unreadable or malformed file is a
    :class:`CheckpointError` naming it."""
    if not path.is_file():
        raise CheckpointNotFound(f"{path}: not found{what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({type(e).__name__}: "
                              f"{one_line(e, 200)})") from None


def read_config(folder: Path) -> dict:
    """``folder/config.json`` as a dict (a list or a number there is an error)."""
    path = folder / "config.json"
    raw = read_json(path, " (a checkpoint folder needs config.json)")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, not a {type(raw).__name__}")
    return raw


def _check_tokenizer(tok, config: ModelConfig, source: str):
    """The tokenizer's ids must index the embedding: a larger vocabulary would fail (or be
    wrong) only on the first rare token."""
    if tok is not None and tok.vocab_size > config.vocab_size:
        raise CheckpointError(f"{source}: the tokenizer has {tok.vocab_size} tokens but the "
                              f"model's vocab_size is {config.vocab_size}")
    return tok


def load_sparktile_folder(folder) -> tuple[ModelConfig, dict, object]:
    """Load a project-format folder: ``(config, weights, tokenizer)``.

    Raises
    ------
    CheckpointNotFound, CheckpointError
        For a missing file or anything malformed (see :func:`validate_weights` and
        :meth:`ModelConfig.from_sparktile`); ``"tokenizer"`` must be ``"bytes"`` or the name
        of a file inside ``folder``.
    """
    folder = Path(folder)
    raw = read_config(folder)
    src = str(folder / "config.json")
    config = ModelConfig.from_sparktile(raw, source=src)
    kind = raw.get("tokenizer", "bytes")
    if kind == "bytes":
        if config.vocab_size < 256:
            raise CheckpointError(f"{src}: a byte tokenizer needs vocab_size >= 256, not "
                                  f"{config.vocab_size}")
        tok = ByteTokenizer(bos_id=config.bos_token_id, eos_ids=config.eos_token_ids)
    else:
        path = inside(folder, kind, f"{src}: tokenizer")
        tok = HFTokenizer.from_file(path, bos_id=config.bos_token_id,
                                    eos_ids=config.eos_token_ids,
                                    add_bos=config.bos_token_id is not None)
    st = folder / "model.safetensors"
    if not st.exists():
        raise CheckpointNotFound(f"{folder}: model.safetensors not found")
    weights = validate_weights(config, read_safetensors(st), str(st))
    return config, weights, _check_tokenizer(tok, config, src)


def load_hf_folder(folder) -> tuple[ModelConfig, dict, object]:
    """Load a Hugging Face Llama/Qwen2 folder: ``(config, weights, tokenizer or None)``."""
    folder = Path(folder)
    src = str(folder / "config.json")
    config = ModelConfig.from_hf(read_config(folder), source=src)
    tensors = hf_to_internal(read_sharded(folder), str(folder))
    if config.tie_word_embeddings:
        tensors.pop("head.weight", None)
    src = str(folder / ("model.safetensors" if (folder / "model.safetensors").exists()
                        else "model.safetensors.index.json"))
    weights = validate_weights(config, tensors, src)
    tok = None
    tj = folder / "tokenizer.json"
    if tj.exists():
        add_bos, raw = False, None
        tc = folder / "tokenizer_config.json"
        if tc.exists():
            raw = read_json(tc)
            add_bos = raw.get("add_bos_token", False) if isinstance(raw, dict) else None
            if not isinstance(add_bos, bool):
                raise CheckpointError(f"{tc}: add_bos_token must be true or false, not "
                                      f"{add_bos!r}")
        tok = HFTokenizer.from_file(tj, bos_id=config.bos_token_id,
                                    eos_ids=config.eos_token_ids, add_bos=add_bos)
        template = read_hf_template(folder, raw)
        if template is not None:
            tok.chat_template = for_tokenizer(tok, *template)
    return config, weights, _check_tokenizer(tok, config, str(tj))


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
