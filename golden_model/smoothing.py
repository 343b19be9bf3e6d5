"""Activation smoothing for the int8 path (SmoothQuant, Xiao et al. 2023), folded exactly.

Static per-tensor activation scales are ruined by a few input channels that are far larger
than the rest (LLMs have them: SmolLM2-135M's ``mlp.down`` inputs reach ~3000 where most
channels stay below 1). Smoothing divides input channel ``c`` of a matmul by
``s_c = a_c**alpha / w_c**(1 - alpha)`` (``a_c``: calibrated activation range of the
channel, ``w_c``: largest weight of column ``c``) and multiplies column ``c`` of the weights
by ``s_c``, which leaves the float product unchanged. The division is folded into whatever
produces the input, so no extra operation appears:

* q, k, v and gate, up: into the preceding RMSNorm's weight (a host-side float op);
* down: into the rows of ``up`` (``silu(gate) * up`` is linear in ``up``);
* o: into the rows (and bias) of ``v`` (attention output is a convex mix of values),
  one factor per value channel, shared by the query heads of its group;
* head: into the final RMSNorm's weight (for a tied head, into the head's own copy).

All of this happens once, at quantization; the float path keeps the original weights.
The rewritten weights are then quantized per output channel as usual.
"""

from __future__ import annotations

import numpy as np

from .config import ModelConfig

__all__ = ["smooth_factors", "smooth"]


def smooth_factors(a: np.ndarray, w_cols: np.ndarray, alpha: float) -> np.ndarray:
    """Per-channel factors ``a**alpha / w**(1-alpha)``, 1.0 where either range is 0."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], not {alpha}")
    a = np.asarray(a, np.float64)
    w = np.asarray(w_cols, np.float64)
    ok = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[ok] = a[ok] ** alpha / w[ok] ** (1.0 - alpha)
    return np.clip(s, 1e-5, 1e5)


def smooth(config: ModelConfig, weights: dict, stats: dict, alpha: float = 0.5):
    """Smoothed copies of the weights and of the calibration statistics.

    Parameters
    ----------
    config : ModelConfig
    weights : dict of str to numpy.ndarray
        Internal-name float32 weights (not modified).
    stats : dict of str to (numpy.ndarray, numpy.ndarray)
        Per-site per-channel absolute maxima of matmul inputs and outputs (not modified).
    alpha : float
        Migration strength in [0, 1]; 0 leaves the activations alone.

    Returns
    -------
    (dict, dict)
        Rewritten weights (only changed tensors are copies) and statistics, such that the
        float model computes the same function.
    """
    w = dict(weights)
    st = {k: (v[0].copy(), v[1].copy()) for k, v in stats.items()}
    g, hd = config.kv_group, config.head_dim
    for i in range(config.num_layers):
        p = f"layers.{i}."
        # q, k, v <- attn_norm ; gate, up <- mlp_norm
        for norm, users in (("attn_norm", ("attn.q", "attn.k", "attn.v")),
                            ("mlp_norm", ("mlp.gate", "mlp.up"))):
            cols = np.max([np.abs(w[p + u + ".weight"]).max(axis=0) for u in users], axis=0)
            s = smooth_factors(st[p + users[0]][0], cols, alpha)
            w[p + norm + ".weight"] = (w[p + norm + ".weight"] / s).astype(np.float32)
            for u in users:
                w[p + u + ".weight"] = (w[p + u + ".weight"] * s[None, :]).astype(np.float32)
                st[p + u] = (st[p + u][0] / s, st[p + u][1])
        # down <- up rows
        s = smooth_factors(st[p + "mlp.down"][0],
                           np.abs(w[p + "mlp.down.weight"]).max(axis=0), alpha)
        w[p + "mlp.up.weight"] = (w[p + "mlp.up.weight"] / s[:, None]).astype(np.float32)
        w[p + "mlp.down.weight"] = (w[p + "mlp.down.weight"] * s[None, :]).astype(np.float32)
        st[p + "mlp.up"] = (st[p + "mlp.up"][0], st[p + "mlp.up"][1] / s)
        st[p + "mlp.down"] = (st[p + "mlp.down"][0] / s, st[p + "mlp.down"][1])
        # o <- v rows: o-input channel (head qh, d) carries value channel (qh // g, d).
        a_o = st[p + "attn.o"][0].reshape(config.num_kv_heads, g, hd).max(axis=1)
        w_o = np.abs(w[p + "attn.o.weight"]).max(axis=0).reshape(config.num_kv_heads, g, hd)
        s_v = smooth_factors(a_o, w_o.max(axis=1), alpha).reshape(-1)     # (nkv*hd,)
        s_o = np.repeat(s_v.reshape(config.num_kv_heads, 1, hd), g, axis=1).reshape(-1)
        w[p + "attn.v.weight"] = (w[p + "attn.v.weight"] / s_v[:, None]).astype(np.float32)
        if p + "attn.v.bias" in w:
            w[p + "attn.v.bias"] = (w[p + "attn.v.bias"] / s_v).astype(np.float32)
        w[p + "attn.o.weight"] = (w[p + "attn.o.weight"] * s_o[None, :]).astype(np.float32)
        st[p + "attn.v"] = (st[p + "attn.v"][0], st[p + "attn.v"][1] / s_v)
        st[p + "attn.o"] = (st[p + "attn.o"][0] / s_o, st[p + "attn.o"][1])
    # head <- final norm (the head's copy of a tied embedding is rewritten, not the embedding)
    head = w["embed.weight"] if config.tie_word_embeddings else w["head.weight"]
    s = smooth_factors(st["head"][0], np.abs(head).max(axis=0), alpha)
    w["norm.weight"] = (w["norm.weight"] / s).astype(np.float32)
    w["head.weight"] = (head * s[None, :]).astype(np.float32)
    st["head"] = (st["head"][0] / s, st["head"][1])
    return w, st
