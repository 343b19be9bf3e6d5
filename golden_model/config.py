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

from dataclasses import dataclass, field

__all__ = ["ModelConfig", "ROPE_TYPES"]

#: Rotary scaling variants understood (``rope_scaling["rope_type"]``).
ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Llama / Qwen2 decoder.

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
        for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                  "head_dim", "intermediate_size", "max_position_embeddings"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"config {self.name!r}: {k} must be a positive integer, "
                                 f"not {v!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"config {self.name!r}: num_heads ({self.num_heads}) must be a "
                             f"multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"config {self.name!r}: head_dim must be even for rotary "
                             f"embeddings, not {self.head_dim}")
        if not self.rope_theta > 0:
            raise ValueError(f"config {self.name!r}: rope_theta must be positive, "
                             f"not {self.rope_theta!r}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"config {self.name!r}: rms_norm_eps must be positive, "
                             f"not {self.rms_norm_eps!r}")
        rt = self.rope_type
        if rt not in ROPE_TYPES:
            raise ValueError(f"config {self.name!r}: rope_scaling type {rt!r} is not "
                             f"supported; supported are {', '.join(ROPE_TYPES)}")

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
    def from_sparktile(cls, d: dict, source: str = "config.json") -> ModelConfig:
        """From the project's ``config.json`` (``"format": "sparktile-llama"``)."""
        if d.get("format") != "sparktile-llama":
            raise ValueError(f"{source}: format must be 'sparktile-llama', "
                             f"not {d.get('format')!r}")
        eos = d.get("eos_token_id")
        try:
            return cls(
                vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                num_layers=d["num_layers"], num_heads=d["num_heads"],
                num_kv_heads=d["num_kv_heads"], head_dim=d["head_dim"],
                intermediate_size=d["intermediate_size"], rope_theta=float(d["rope_theta"]),
                rms_norm_eps=float(d["rms_norm_eps"]),
                tie_word_embeddings=bool(d["tie_word_embeddings"]),
                attention_bias=bool(d.get("attention_bias", False)),
                max_position_embeddings=d["max_position_embeddings"],
                bos_token_id=d.get("bos_token_id"),
                eos_token_ids=_as_ids(eos), rope_scaling=d.get("rope_scaling"),
                name=d.get("name", "model"))
        except KeyError as e:
            raise ValueError(f"{source}: required key {e.args[0]!r} missing") from None

    @classmethod
    def from_hf(cls, d: dict, source: str = "config.json") -> ModelConfig:
        """From a Hugging Face ``config.json`` of ``model_type`` ``llama`` or ``qwen2``."""
        mt = d.get("model_type")
        if mt not in ("llama", "qwen2"):
            raise ValueError(f"{source}: model_type {mt!r} is not supported; supported are "
                             "'llama' and 'qwen2'")
        if d.get("mlp_bias"):
            raise ValueError(f"{source}: mlp_bias=true is not supported")
        if mt == "qwen2" and d.get("use_sliding_window"):
            raise ValueError(f"{source}: use_sliding_window=true is not supported")
        try:
            heads = d["num_attention_heads"]
            hd = d.get("head_dim") or d["hidden_size"] // heads
            rope = d.get("rope_parameters") or {}
            theta = d.get("rope_theta", rope.get("rope_theta", 10000.0))
            scaling = d.get("rope_scaling")
            if scaling is None and rope.get("rope_type", "default") != "default":
                scaling = rope
            if scaling is not None and scaling.get("rope_type", scaling.get("type")) \
                    == "default":
                scaling = None
            return cls(
                vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                num_layers=d["num_hidden_layers"], num_heads=heads,
                num_kv_heads=d.get("num_key_value_heads") or heads, head_dim=hd,
                intermediate_size=d["intermediate_size"], rope_theta=float(theta),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                attention_bias=True if mt == "qwen2" else bool(d.get("attention_bias")),
                max_position_embeddings=d.get("max_position_embeddings", 2048),
                bos_token_id=d.get("bos_token_id"), eos_token_ids=_as_ids(d.get("eos_token_id")),
                rope_scaling=scaling, name=d.get("_name_or_path") or mt)
        except KeyError as e:
            raise ValueError(f"{source}: required key {e.args[0]!r} missing") from None


def _as_ids(v) -> tuple[int, ...]:
    if v is None:
        return ()
    if isinstance(v, int):
        return (v,)
    return tuple(int(x) for x in v)
