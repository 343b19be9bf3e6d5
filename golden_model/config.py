"""The shape of a Llama-family decoder, validated once, whatever file it came from.

:class:`ModelConfig` is filled from the project's own ``config.json``
(:meth:`ModelConfig.from_sparktile`), from a Hugging Face ``config.json``
(:meth:`ModelConfig.from_hf`) or from GGUF metadata (``gguf_loader``), and tells every
tensor's expected shape (:meth:`ModelConfig.expected_shapes`), under the internal names that
the model, the checkpoints and the :class:`~sparktile.golden_model.backend.MatmulOp` names
share::

    embed.weight                      (vocab, d)
    layers.{i}.attn_norm.weight       (d,)
    layers.{i}.attn.{q,k,v,o}.weight  (out, in)      + .bias for q, k, v when attention_bias
    layers.{i}.mlp_norm.weight        (d,)
    layers.{i}.mlp.{gate,up,down}.weight
    norm.weight                       (d,)
    head.weight                       (vocab, d)     absent when tie_word_embeddings
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import CheckpointError

__all__ = ["ModelConfig", "ROPE_TYPES", "FORMAT_VERSIONS", "MAX_DIM", "MAX_LAYERS"]

#: Rotary scaling variants understood (``rope_scaling["rope_type"]``).
ROPE_TYPES = ("default", "linear", "llama3")
#: ``format_version`` values of the project format this code reads.
FORMAT_VERSIONS = (1,)
#: Largest size accepted for any one dimension (vocabulary, widths, context): far above any
#: real model, low enough that a corrupt value is refused before anything is sized from it.
MAX_DIM = 1 << 31
#: Most layers accepted (real Llama-family models have at most ~130); bounds the work done
#: on a corrupt value before the tensors are checked.
MAX_LAYERS = 4096

_SIZES = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
          "intermediate_size", "max_position_embeddings")


# ------------------------------------------------------------------ field checks
# Each takes the raw value, the key as the user wrote it and the file it came from, and
# returns the value as the model uses it or raises CheckpointError naming all three.

def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_int(v, key: str, source: str, lo: int = 1, hi: int = MAX_DIM) -> int:
    """``v`` as an int in ``[lo, hi]``; a bool, float or string is refused, not converted."""
    if not _is_int(v) or not lo <= int(v) <= hi:
        what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        raise CheckpointError(f"{source}: {key} must be {what}, not {v!r:.100} (allowed: "
                              f"{lo} to {hi})")
    return int(v)


def check_float(v, key: str, source: str, hi: float = math.inf) -> float:
    """``v`` as a finite float in ``(0, hi)``; ints are accepted, bools and strings not."""
    ok = (_is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(float(v)) \
        and 0 < float(v) < hi
    if not ok:
        rng = "a finite number > 0" if hi == math.inf else f"a number in (0, {hi})"
        raise CheckpointError(f"{source}: {key} must be {rng}, not {v!r}")
    return float(v)


def check_bool(v, key: str, source: str) -> bool:
    """``v`` if it is a JSON boolean (``1`` or ``"false"`` are refused: they are ambiguous)."""
    if not isinstance(v, (bool, np.bool_)):
        raise CheckpointError(f"{source}: {key} must be true or false, not {v!r}")
    return bool(v)


def _check_rope_scaling(rs, source: str) -> dict | None:
    """A validated copy of ``rope_scaling`` (None when absent or ``default``)."""
    if rs is None:
        return None
    if not isinstance(rs, dict):
        raise CheckpointError(f"{source}: rope_scaling must be an object or null, not {rs!r}")
    rt = rs.get("rope_type", rs.get("type", "default"))
    if rt not in ROPE_TYPES:
        raise CheckpointError(f"{source}: rope_scaling type {rt!r} is not supported; "
                              f"supported are {', '.join(ROPE_TYPES)}")
    if rt == "default":
        return None
    out = dict(rs)
    out["factor"] = check_float(rs.get("factor"), "rope_scaling.factor", source)
    if rt == "llama3":
        for k in ("low_freq_factor", "high_freq_factor"):
            out[k] = check_float(rs.get(k), f"rope_scaling.{k}", source)
        if not out["high_freq_factor"] > out["low_freq_factor"]:
            raise CheckpointError(
                f"{source}: rope_scaling.high_freq_factor ({out['high_freq_factor']}) must be "
                f"greater than low_freq_factor ({out['low_freq_factor']})")
        k = "original_max_position_embeddings"
        out[k] = check_int(rs.get(k), f"rope_scaling.{k}", source)
    return out


def _check_ids(v, key: str, source: str) -> tuple[int, ...]:
    """An id or a list of ids (or null) as a tuple; range checks against the vocabulary come
    later, in :class:`ModelConfig`."""
    if v is None:
        return ()
    if _is_int(v):
        v = [v]
    if not isinstance(v, (list, tuple)) or len(v) > 1024:
        raise CheckpointError(f"{source}: {key} must be a token id, a list of ids or null, "
                              f"not {v!r}")
    return tuple(check_int(x, key, source, lo=0) for x in v)


def _opt_id(v, key: str, source: str) -> int | None:
    return None if v is None else check_int(v, key, source, lo=0)


def _check_name(v, key: str, source: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 1000:
        raise CheckpointError(f"{source}: {key} must be a non-empty string, not {v!r}")
    return v


def _require(d: dict, key: str, source: str):
    if key not in d:
        raise CheckpointError(f"{source}: required key {key!r} missing")
    return d[key]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Llama / Qwen2 decoder.

    Every field is validated on construction (:class:`~sparktile.golden_model.errors.
    CheckpointError` naming the field): sizes are positive integers, ``num_heads`` a multiple
    of ``num_kv_heads``, special token ids inside the vocabulary, ``rope_scaling`` complete
    for its type. The constructors from files check the raw values' types first, under the
    file's own key names.

    Attributes
    ----------
    vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim, intermediate_size
        Sizes; ``num_heads`` must be a multiple of ``num_kv_heads`` (grouped-query attention).
    rope_theta : float
        Base of the rotary frequencies (the checkpoint's own).
    rms_norm_eps : float
        Epsilon of every RMSNorm.
    tie_word_embeddings : bool
        Output head shares the token embedding matrix.
    attention_bias : bool
        q, k and v projections carry biases (Qwen2).
    max_position_embeddings : int
        Longest sequence (prompt + generated) accepted.
    bos_token_id, eos_token_ids
        Special tokens; ``eos_token_ids`` is a tuple (generation stops at any of them).
    rope_scaling : dict or None
        Hugging Face ``rope_scaling`` (``linear`` or ``llama3``), or None.
    name : str
        Human-readable name.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    rope_scaling: dict | None = field(default=None, hash=False, compare=False)
    name: str = "model"

    def __post_init__(self):
        src = f"config {self.name!r}"
        for k in _SIZES:
            check_int(getattr(self, k), k, src, hi=MAX_LAYERS if k == "num_layers" else MAX_DIM)
        if self.num_heads % self.num_kv_heads:
            raise CheckpointError(f"{src}: num_heads ({self.num_heads}) must be a "
                                  f"multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise CheckpointError(f"{src}: head_dim must be even for rotary "
                                  f"embeddings, not {self.head_dim}")
        check_float(self.rope_theta, "rope_theta", src)
        check_float(self.rms_norm_eps, "rms_norm_eps", src, hi=1.0)
        check_bool(self.tie_word_embeddings, "tie_word_embeddings", src)
        check_bool(self.attention_bias, "attention_bias", src)
        for key, ids in (("bos_token_id", () if self.bos_token_id is None
                          else (self.bos_token_id,)), ("eos_token_id", self.eos_token_ids)):
            for i in ids:
                if not _is_int(i) or not 0 <= int(i) < self.vocab_size:
                    raise CheckpointError(f"{src}: {key} {i!r} is outside the vocabulary "
                                          f"[0, {self.vocab_size})")
        _check_rope_scaling(self.rope_scaling, src)

    @property
    def rope_type(self) -> str:
        """``default`` when unscaled, else ``rope_scaling``'s type."""
        rs = self.rope_scaling or {}
        return rs.get("rope_type", rs.get("type", "default"))

    @property
    def kv_group(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every tensor a checkpoint must provide, by internal name."""
        d, hd, f = self.hidden_size, self.head_dim, self.intermediate_size
        qd, kvd = self.num_heads * hd, self.num_kv_heads * hd
        s = {"embed.weight": (self.vocab_size, d), "norm.weight": (d,)}
        for i in range(self.num_layers):
            p = f"layers.{i}."
            s[p + "attn_norm.weight"] = (d,)
            s[p + "attn.q.weight"] = (qd, d)
            s[p + "attn.k.weight"] = (kvd, d)
            s[p + "attn.v.weight"] = (kvd, d)
            s[p + "attn.o.weight"] = (d, qd)
            if self.attention_bias:
                s[p + "attn.q.bias"] = (qd,)
                s[p + "attn.k.bias"] = (kvd,)
                s[p + "attn.v.bias"] = (kvd,)
            s[p + "mlp_norm.weight"] = (d,)
            s[p + "mlp.gate.weight"] = (f, d)
            s[p + "mlp.up.weight"] = (f, d)
            s[p + "mlp.down.weight"] = (d, f)
        if not self.tie_word_embeddings:
            s["head.weight"] = (self.vocab_size, d)
        return s

    # ------------------------------------------------------------------ constructors

    @classmethod
    def checked(cls, source: str, **fields) -> ModelConfig:
        """``ModelConfig(**fields)``, its consistency errors prefixed with ``source``."""
        try:
            return cls(**fields)
        except CheckpointError as e:
            raise CheckpointError(f"{source}: {e}") from None

    @classmethod
    def from_sparktile(cls, d: dict, source: str = "config.json") -> ModelConfig:
        """From the project's ``config.json`` (``"format": "sparktile-llama"``)."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: must hold a JSON object, not a "
                                  f"{type(d).__name__}")
        if d.get("format") != "sparktile-llama":
            raise CheckpointError(f"{source}: format must be 'sparktile-llama', "
                                  f"not {d.get('format')!r}")
        version = d.get("format_version", 1)
        if not _is_int(version) or version not in FORMAT_VERSIONS:
            raise CheckpointError(f"{source}: format_version {version!r} is not supported; "
                                  f"this sparktile reads {', '.join(map(str, FORMAT_VERSIONS))}")
        f = {k: check_int(_require(d, k, source), k, source,
                          hi=MAX_LAYERS if k == "num_layers" else MAX_DIM)
             for k in _SIZES}
        return cls.checked(
            source, **f,
            rope_theta=check_float(_require(d, "rope_theta", source), "rope_theta", source),
            rms_norm_eps=check_float(_require(d, "rms_norm_eps", source), "rms_norm_eps",
                                     source, hi=1.0),
            tie_word_embeddings=check_bool(_require(d, "tie_word_embeddings", source),
                                           "tie_word_embeddings", source),
            attention_bias=check_bool(d.get("attention_bias", False), "attention_bias",
                                      source),
            bos_token_id=_opt_id(d.get("bos_token_id"), "bos_token_id", source),
            eos_token_ids=_check_ids(d.get("eos_token_id"), "eos_token_id", source),
            rope_scaling=_check_rope_scaling(d.get("rope_scaling"), source),
            name=_check_name(d.get("name", "model"), "name", source))

    @classmethod
    def from_hf(cls, d: dict, source: str = "config.json") -> ModelConfig:
        """From a Hugging Face ``config.json`` of ``model_type`` ``llama`` or ``qwen2``."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: must hold a JSON object, not a "
                                  f"{type(d).__name__}")
        mt = d.get("model_type")
        if mt not in ("llama", "qwen2"):
            raise CheckpointError(f"{source}: model_type {mt!r} is not supported; supported "
                                  "are 'llama' and 'qwen2'")
        for key in ("mlp_bias",) + (("use_sliding_window",) if mt == "qwen2" else ()):
            if d.get(key) is not None and check_bool(d[key], key, source):
                raise CheckpointError(f"{source}: {key}=true is not supported")

        def size(key, default=None):
            v = d.get(key) if default is not None else _require(d, key, source)
            if v is None:
                v = default
            return check_int(v, key, source,
                             hi=MAX_LAYERS if key == "num_hidden_layers" else MAX_DIM)

        heads = size("num_attention_heads")
        hidden = size("hidden_size")
        if d.get("head_dim") is not None:
            hd = size("head_dim")
        elif hidden % heads:
            raise CheckpointError(f"{source}: hidden_size ({hidden}) must be divisible by "
                                  f"num_attention_heads ({heads}) when head_dim is not given")
        else:
            hd = hidden // heads
        rope = d.get("rope_parameters")
        if rope is None:
            rope = {}
        elif not isinstance(rope, dict):
            raise CheckpointError(f"{source}: rope_parameters must be an object or null, "
                                  f"not {rope!r}")
        theta = d.get("rope_theta", rope.get("rope_theta", 10000.0))
        scaling = d.get("rope_scaling")
        if scaling is None and rope.get("rope_type", "default") != "default":
            scaling = rope
        name = d.get("_name_or_path") or mt
        return cls.checked(
            source, vocab_size=size("vocab_size"), hidden_size=hidden,
            num_layers=size("num_hidden_layers"), num_heads=heads,
            num_kv_heads=size("num_key_value_heads", heads), head_dim=hd,
            intermediate_size=size("intermediate_size"),
            rope_theta=check_float(theta, "rope_theta", source),
            rms_norm_eps=check_float(d.get("rms_norm_eps", 1e-6), "rms_norm_eps", source,
                                     hi=1.0),
            tie_word_embeddings=check_bool(d.get("tie_word_embeddings", False),
                                           "tie_word_embeddings", source),
            attention_bias=True if mt == "qwen2" else check_bool(
                d.get("attention_bias", False), "attention_bias", source),
            max_position_embeddings=size("max_position_embeddings", 2048),
            bos_token_id=_opt_id(d.get("bos_token_id"), "bos_token_id", source),
            eos_token_ids=_check_ids(d.get("eos_token_id"), "eos_token_id", source),
            rope_scaling=_check_rope_scaling(scaling, source),
            name=_check_name(name, "_name_or_path", source))
