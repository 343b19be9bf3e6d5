"""The ``int`` path: the whole decoder in the PE's integer arithmetic.

Token id in, int32 logits and the next token out; every run-time step is a function of
:mod:`sparktile.golden_model.arith` on integer numpy arrays. This module only *builds* the
constants (from the float weights and the calibration statistics, once) and strings the ops
together; see ``docs/golden_model.md``, *The int path*, for the formats.

Formats (all static, calibrated on :data:`~sparktile.golden_model.quant.CALIBRATION_TEXT`
like the int8 path, and after the same smoothing):

=====================  =================================================================
residual stream        int32, ``F`` fractional bits (``s_r = 2**-F``, one ``F`` per model:
                       the largest that leaves 4x headroom over the calibrated range and
                       keeps every requantization multiplier in 16 bits); saturating adds
embedding              int8 rows with a per-row scale, requantized into the residual format
norm outputs           int8, one static scale per tensor (the input of q/k/v, gate/up, head)
q, k projections       int8, one scale per rotary pair (both channels of a pair share it)
k cache                int8 after RoPE, static scale per channel
q after RoPE           int8, per head, with the k cache's channel scales folded in, so the
                       score ``q . k`` is one int8 x int8 -> int32 dot product per head
v / v cache            int8, static scale per channel
probabilities          unsigned Q0.15 (16-bit words)
attention output       int8, per tensor (o's input scale)
gate                   int8, one scale per layer (it indexes the layer's SiLU table)
up                     int8, per channel
silu(gate) * up        int8, per tensor (down's input scale)
logits                 int32, 16 fractional bits
=====================  =================================================================

Under per-token dynamic activation scales (``model.act_scales_used == "dynamic"``, chosen
for models with activation outliers) the three producers of matmul inputs (the RMSNorms,
``p . v`` and ``silu(gate) * up``) write a *wide* int32 with a static scale that bounds
them by construction, :func:`arith.quantize_dynamic` turns each token into int8 with its
own scale (``mant 2**ex``), every weight matmul returns int32 and
:func:`arith.requantize_dynamic` brings it to the same output formats as above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import arith
from .backend import MatmulOp
from .errors import GenerationError
from .quant import GROUP, act_scale, group_ops, quantize_weight
from .rope import rope_tables

__all__ = ["LOGIT_FRAC", "MAX_POSITIONS", "IntLinear", "IntLayer", "IntParams", "build",
           "forward", "TRACE_POINTS"]

#: The names :func:`forward` records in its ``trace`` for each layer, in order, then the
#: final norm's and the logits (layer -1).
TRACE_POINTS = ("attn_norm", "q", "k", "v", "q_rope", "k_rope", "attn_sum", "attn_out", "o",
                "resid_attn", "mlp_norm", "silu_up", "down", "resid_mlp")

#: Fractional bits of the int32 logits.
LOGIT_FRAC = 16
#: Longest sequence of the int path: the softmax sum of 2**15-unit exponentials must stay
#: under 2**31.
MAX_POSITIONS = 1 << 16
#: Largest head_dim: |q . k| <= 128**2 * head_dim must fit the int32 score accumulator
#: with the exp argument's product (``(max - s) * mult``, mult < 2**16) under 2**47.
MAX_HEAD_DIM = 1 << 14


@dataclass(eq=False)
class IntLinear:
    """A weight matmul of the int path: the :class:`MatmulOp` plus its host constants.

    ``op.out == "int8"``: the mesh requantizes (no bias). ``"int32"``: the accumulator
    comes back; with ``bias_q`` it is added (``sat32``) and, with ``mult``/``shift``,
    requantized to int8 here (:func:`arith.requantize_to`).
    """

    op: MatmulOp
    s_w: np.ndarray
    s_x: float
    bias_q: np.ndarray | None = None
    mult: np.ndarray | None = None
    shift: np.ndarray | None = None
    #: Per-token dynamic input (:func:`arith.requantize_dynamic` with ``mult``/``shift``);
    #: ``s_x`` is then the input's *wide* static scale (before the per-token int8 step).
    dynamic: bool = False
    #: Output width: 8 (int8) or 32 (o / down into the residual stream, the head's logits).
    bits: int = 8
    #: The ops the backend runs: ``[op]``, or one per input-channel group (``mult`` and
    #: ``shift`` are then (groups, M)).
    ops: list = None

    def __post_init__(self):
        if self.ops is None:
            self.ops = [self.op]


@dataclass(eq=False)
class IntLayer:
    """Constants of one decoder layer (int64 arrays; see :func:`build`)."""

    n1: tuple
    q: IntLinear
    k: IntLinear
    v: IntLinear
    q_rope: tuple
    k_rope: tuple
    sm: tuple
    pv: tuple
    o: IntLinear
    o_res: tuple
    n2: tuple
    gate: IntLinear
    up: IntLinear
    silu: np.ndarray
    gu: tuple
    down: IntLinear
    down_res: tuple
    #: The float scales behind the constants (for reports and ablations; never used at run
    #: time): s_h1, s_h2 (norm outputs), s_q, s_k (per pair), s_kc (k cache), sigma (q after
    #: RoPE, per head), s_v, s_g, s_s (SiLU table), s_u.
    scales: dict = field(default_factory=dict)


@dataclass(eq=False)
class IntParams:
    """Everything the int path needs, all integers (plus the float scales for reports)."""

    frac: int
    eps_q: int
    embed_q: np.ndarray
    embed_rq: tuple
    layers: list = field(default_factory=list)
    norm: tuple = ()
    head: IntLinear | None = None
    head_rq: tuple = ()
    cos_q: np.ndarray | None = None
    sin_q: np.ndarray | None = None
    #: Float scale of the final norm's output (report only).
    s_head_in: float = 1.0
    #: Per-token dynamic activation scales (see the module docstring).
    dynamic: bool = False


def check_config(config) -> None:
    """Refuse shapes the integer formats cannot hold, naming the field."""
    if config.head_dim > MAX_HEAD_DIM:
        raise GenerationError(f"config {config.name!r}: head_dim {config.head_dim} is too large "
                         f"for the int path (at most {MAX_HEAD_DIM}: the q.k score must fit "
                         "the int32 accumulator)")
    if config.hidden_size > (1 << 20):
        raise GenerationError(f"config {config.name!r}: hidden_size {config.hidden_size} is too "
                         "large for the int path (at most 2**20: the RMSNorm sum of squares "
                         "must stay under 2**50)")


def _params(scale):
    m, s = arith.requant_params(np.asarray(scale, np.float64))
    return m.astype(np.int64), s.astype(np.int64)


#: Extra fractional bits under which a dynamic linear adds its bias before the last rounding.
BIAS_FRAC = 8


def _dyn_linear(name, kind, layer, w, s_wide, s_out, bias=None, bits=8,
                group=0) -> IntLinear:
    """A matmul fed by :func:`arith.quantize_dynamic` of a wide input of real scale
    ``s_wide``: int32 out, brought per token to ``s_out 2**-BIAS_FRAC`` (per channel or one
    number) by :func:`arith.requantize_dynamic`, the bias added there, then rounded to
    ``s_out``. ``group``: one op per ``group`` input channels (their partial sums are
    rescaled each, by the group's own per-token scale, and added)."""
    if group:
        ops, s_wg = group_ops(name, kind, layer, w, group)
        s_wg = s_wg.astype(np.float64)
    else:
        w_q, s_w = quantize_weight(w)
        zeros = np.zeros(w_q.shape[0], np.int64)
        ops = [MatmulOp(name=name, kind=kind, layer=layer, w_q=w_q, mult=zeros,
                        shift=zeros.copy(), out="int32")]
        s_wg = s_w[None, :]
    s_o = np.broadcast_to(np.asarray(s_out, np.float64), s_wg.shape[1:]) * 2.0 ** -BIAS_FRAC
    real = s_wg * s_wide / (127.0 * s_o)
    if real.max() >= 1 << (arith.MULT_BITS - 1):
        raise GenerationError(f"{name}: the dynamic requantization scale {real.max():.3g} is "
                              "too large for a 16-bit multiplier with a right shift")
    lin = IntLinear(op=ops[0], s_w=s_wg.max(axis=0), s_x=s_wide, dynamic=True, bits=bits,
                    ops=ops)
    mult, shift = arith.signed_params(real.reshape(-1), arith.DYN_SHIFT_MAX)
    if np.any((mult == 0) & (real.reshape(-1) > 0)):
        raise GenerationError(f"{name}: a dynamic requantization scale is below 2**-"
                              f"{arith.DYN_SHIFT_MAX - 16} (a weight scale of {s_wg.min():.3g})")
    lin.mult, lin.shift = mult.reshape(real.shape), shift.reshape(real.shape)
    if bias is not None:
        lin.bias_q = np.rint(np.asarray(bias, np.float64) / s_o).astype(np.int64)
    return lin


def _linear(name, kind, layer, w, s_x, s_out=None, bias=None) -> IntLinear:
    """Quantize ``w`` per output channel; mesh-requantized to ``s_out`` when there is no bias."""
    w_q, s_w = quantize_weight(w)
    m = w_q.shape[0]
    zeros = np.zeros(m, np.int64)
    if s_out is not None and bias is None:
        mult, shift = _params(s_w * s_x / s_out)
        op = MatmulOp(name=name, kind=kind, layer=layer, w_q=w_q, mult=mult, shift=shift,
                      out="int8")
        return IntLinear(op=op, s_w=s_w, s_x=s_x)
    op = MatmulOp(name=name, kind=kind, layer=layer, w_q=w_q, mult=zeros, shift=zeros.copy(),
                  out="int32")
    lin = IntLinear(op=op, s_w=s_w, s_x=s_x)
    if bias is not None:
        lin.bias_q = np.rint(np.asarray(bias, np.float64) / (s_w * s_x)).astype(np.int64)
    if s_out is not None:
        lin.mult, lin.shift = _params(s_w * s_x / s_out)
    return lin


def build(model, stats: dict, extra: dict, qw: dict) -> IntParams:
    """Build the int path's constants.

    Parameters
    ----------
    model : Model
        Its :attr:`~Model.act_scales_used` (``static`` or ``dynamic``) picks the scheme.
    stats : dict
        Per-site ``(input, output)`` absolute maxima per channel, *after* smoothing.
    extra : dict
        Float-path ranges the int path needs besides: ``layers.{i}.rope_q`` (heads,
        head_dim) and ``layers.{i}.rope_k`` (kv_heads, head_dim) after RoPE, and
        ``resid`` (the residual stream's absolute maximum).
    qw : dict
        The smoothed weights (norm weights with the smoothing factors folded in).
    """
    c = model.config
    check_config(c)
    dyn = model.act_scales_used in ("dynamic", "group")
    group = GROUP if model.act_scales_used == "group" else 0
    d, nh, nkv, hd, g = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.kv_group
    half = hd // 2

    # Embedding rows: int8 per row; its requantization constrains F like the others.
    e_q, s_e = quantize_weight(model.weights["embed.weight"])
    ratios = [s_e.max()]
    lins = {}
    if not dyn:
        for i in range(c.num_layers):
            for k in ("attn.o", "mlp.down"):
                name = f"layers.{i}.{k}"
                lins[name] = _linear(name, k.split(".")[1], i, qw[name + ".weight"],
                                     act_scale(stats[name][0].max()))
                ratios.append((lins[name].s_w * lins[name].s_x).max())
    amax = max(float(extra["resid"]), 1e-6)
    frac = int(math.floor(31 - math.log2(4 * amax)))
    frac = min(frac, int(math.floor(math.log2((1 << 15) / max(ratios)))))
    s_r = 2.0 ** -frac
    eps_q = int(round(c.rms_norm_eps * d / s_r ** 2))
    if eps_q >= 1 << 62:
        raise GenerationError(f"config {c.name!r}: rms_norm_eps {c.rms_norm_eps} is too large for "
                         "the int path's residual format")
    p = IntParams(frac=frac, eps_q=eps_q, embed_q=e_q, embed_rq=_params(s_e / s_r),
                  dynamic=dyn)

    def norm(wname, s_h):
        """(mult, shift) of an RMSNorm's output and its scale: int8 at ``s_h`` (static), or
        wide int32 at ``sqrt(d) max|w| / 2**30`` (dynamic: cannot saturate)."""
        w = qw[wname].astype(np.float64)
        if dyn:
            s_h = max(math.sqrt(d) * float(np.abs(w).max()), 1e-30) / 2.0 ** 30
        return arith.signed_params(math.sqrt(d) * w / (s_h * 2.0 ** 30)), s_h

    def linear(name, kind, i, s_in, s_out=None, bias=None, bits=8):
        """Static: ``s_in`` is the int8 input scale; dynamic: the wide input's scale."""
        w = qw[name + ".weight"]
        if dyn:
            return _dyn_linear(name, kind, i, w, s_in, s_out, bias, bits, group)
        return _linear(name, kind, i, w, s_in, None if bits == 32 else s_out, bias)

    npos = min(c.max_position_embeddings, MAX_POSITIONS)
    cos, sin = rope_tables(c, np.arange(npos))
    p.cos_q, p.sin_q = arith.rope_table_int(cos, sin)
    rope_unit = 2.0 ** -arith.ROPE_FRAC
    for i in range(c.num_layers):
        pre = f"layers.{i}."
        n1, s_h1 = norm(pre + "attn_norm.weight", act_scale(stats[pre + "attn.q"][0].max()))
        qk = {}
        for k, heads in (("q", nh), ("k", nkv)):
            name = pre + "attn." + k
            b = qw.get(name + ".bias")
            a = stats[name][1] + (np.abs(b) if b is not None else 0.0)
            a = a.reshape(heads, hd)
            a = np.maximum(a[:, :half], a[:, half:])
            s_pair = np.asarray(act_scale(np.concatenate([a, a], axis=1)), np.float64)
            if dyn:     # int16 q/k before RoPE (scale s_pair / 256); int8 after it
                s_pair = s_pair / 256.0
                qk[k] = (linear(name, k, i, s_h1, s_pair.reshape(-1), b, bits=16), s_pair)
            else:
                qk[k] = (linear(name, k, i, s_h1, s_pair.reshape(-1), b), s_pair)
        s_kc = np.asarray(act_scale(extra[pre + "rope_k"]), np.float64).reshape(nkv, hd)
        s_kc_q = np.repeat(s_kc, g, axis=0)                       # (nh, hd): kv head of h
        sigma = np.maximum((extra[pre + "rope_q"] * s_kc_q).max(axis=1), 1e-30) / 127.0
        q_rope = _params(qk["q"][1] * rope_unit * s_kc_q / sigma[:, None])
        k_rope = _params(qk["k"][1] * rope_unit / s_kc)
        sm = _params(sigma / math.sqrt(hd) * math.log2(math.e) * (1 << arith.EXP_FRAC))
        sm = (sm[0].reshape(nkv, g, 1, 1), sm[1].reshape(nkv, g, 1, 1))
        vname = pre + "attn.v"
        bv = qw.get(vname + ".bias")
        s_v = np.asarray(act_scale(stats[vname][1] + (np.abs(bv) if bv is not None else 0.0)),
                         np.float64)
        v = linear(vname, "v", i, s_h1, s_v, bv)
        s_vq = np.repeat(s_v.reshape(nkv, 1, hd), g, axis=0)       # (nh, 1, hd)
        # o's input: int8 at o's static scale, or wide at a scale no convex mix of int8
        # values can exceed (|a| <= 127 s_v).
        s_a = (127.0 * float(s_v.max()) / 2.0 ** 30 if dyn
               else act_scale(stats[pre + "attn.o"][0].max()))
        o = lins.get(pre + "attn.o") or linear(pre + "attn.o", "o", i, s_a, s_r, bits=32)
        pv = _params(s_vq * 2.0 ** -arith.PROB_FRAC / o.s_x)
        s_h2_static = act_scale(stats[pre + "mlp.gate"][0].max())
        n2, s_h2 = norm(pre + "mlp_norm.weight", s_h2_static)
        s_g = act_scale(stats[pre + "mlp.gate"][1].max())
        s_u = np.asarray(act_scale(stats[pre + "mlp.up"][1]), np.float64)
        xs = np.arange(-128, 129) * s_g
        s_s = max(float(np.abs(xs / (1 + np.exp(-xs))).max()), 1e-30) / 32767.0
        if dyn:
            # int16 gate and up (scales s_g / 256, s_u / 256), SiLU interpolated in a
            # 257-entry table; down's input is wide, bounded by |silu| |up| < 2**16 2**15.
            gate = linear(pre + "mlp.gate", "gate", i, s_h2, s_g / 256.0, bits=16)
            up = linear(pre + "mlp.up", "up", i, s_h2, s_u / 256.0, bits=16)
            silu = arith.silu_table_interp(s_g, s_s)
            s_u_in = s_u / 256.0
            s_m = 2.0 ** 31 * s_s * float(s_u_in.max()) / 2.0 ** 30
        else:
            gate = linear(pre + "mlp.gate", "gate", i, s_h2, s_g)
            up = linear(pre + "mlp.up", "up", i, s_h2, s_u)
            silu = arith.silu_table_int8(s_g, s_s)
            s_u_in = s_u
            s_m = act_scale(stats[pre + "mlp.down"][0].max())
        down = lins.get(pre + "mlp.down") or linear(pre + "mlp.down", "down", i, s_m, s_r,
                                                    bits=32)
        p.layers.append(IntLayer(
            n1=n1, q=qk["q"][0], k=qk["k"][0], v=v,
            q_rope=q_rope, k_rope=k_rope, sm=sm, pv=pv, o=o,
            o_res=_params(o.s_w * o.s_x / s_r), n2=n2,
            gate=gate, up=up, silu=silu, gu=_params(s_s * s_u_in / down.s_x), down=down,
            down_res=_params(down.s_w * down.s_x / s_r),
            scales=dict(s_h1=s_h1, s_h2=s_h2, s_q=qk["q"][1], s_k=qk["k"][1], s_kc=s_kc,
                        sigma=sigma, s_v=s_v, s_g=s_g, s_s=s_s, s_u=s_u)))
    p.norm, s_hh = norm("norm.weight", act_scale(stats["head"][0].max()))
    p.s_head_in = s_hh
    if dyn:
        p.head = _dyn_linear("head", "head", -1, qw["head.weight"], s_hh,
                             2.0 ** -LOGIT_FRAC, bits=32, group=group)
    else:
        p.head = _linear("head", "head", -1, qw["head.weight"], s_hh)
    p.head_rq = _params(p.head.s_w * s_hh * 2.0 ** LOGIT_FRAC)
    return p


def _mm(backend, lin: IntLinear, x) -> np.ndarray:
    """Run ``lin`` on its input: int8 ``x`` (T, N) (static), or the wide int rows that
    :func:`arith.quantize_dynamic` turns into int8 per token (dynamic). Returns int8 (T, M),
    or int32/int64 accumulators for a static o/down/head, or ``lin.bits``-bit outputs of a
    dynamic linear."""
    if lin.dynamic:
        n = len(lin.ops)
        x_q, mant, ex = arith.quantize_dynamic(np.asarray(x).reshape(x.shape[0], n, -1))
        tot = 0
        for j, op in enumerate(lin.ops):
            acc = backend.matmul(op, np.ascontiguousarray(x_q[:, j])).astype(np.int64)
            tot = tot + arith.requantize_dynamic(acc, mant[:, j], ex[:, j], lin.mult[j],
                                                 lin.shift[j], 48)
        if lin.bias_q is not None:
            tot = tot + lin.bias_q
        y = arith.requantize_to(tot, 1, BIAS_FRAC, lin.bits)
        return y.astype(np.int8) if lin.bits == 8 else y    # int16 q/k/gate/up stay int64
    y = backend.matmul(lin.op, np.ascontiguousarray(x))
    if lin.op.out == "int8":
        return y
    acc = y.astype(np.int64)
    if lin.bias_q is not None:
        acc = arith.sat(acc + lin.bias_q, 32)
    if lin.mult is not None:
        return arith.requantize_to(acc, lin.mult, lin.shift, 8).astype(np.int8)
    return acc


def _to_resid(lin: IntLinear, y, rq) -> np.ndarray:
    """o / down output into the residual format: already there (dynamic), or requantized."""
    return y if lin.dynamic else arith.requantize_to(y, *rq, 32)


def forward(model, p: IntParams, ids: np.ndarray, cache, trace: dict | None = None
            ) -> np.ndarray:
    """Integer forward pass of ``ids`` (T,) after ``cache``; int32 logits (T, vocab).

    ``trace``: a dict that receives the intermediate vectors, keyed ``(layer, name)`` (layer
    -1 for the final norm and the logits; see :data:`TRACE_POINTS`), each (T, ...) as
    computed: what ``sparktile run --on-fabric all --check every-op`` compares the fabric's
    vectors with."""

    def tap(layer, name, value):
        if trace is not None:
            trace[layer, name] = np.asarray(value).copy()

    c = model.config
    be = model.backend
    t, start = ids.size, cache.length
    if start + t > MAX_POSITIONS:
        raise GenerationError(f"the int path holds at most {MAX_POSITIONS} positions "
                         f"(max_position_embeddings {c.max_position_embeddings}); this "
                         f"sequence needs {start + t}")
    nh, nkv, hd, g = c.num_heads, c.num_kv_heads, c.head_dim, c.kv_group
    nb = 32 if p.dynamic else 8          # width of the norm / p.v / gate-up outputs
    cos_q, sin_q = p.cos_q[start:start + t], p.sin_q[start:start + t]
    mask = np.arange(start + t)[None, :] > (start + np.arange(t))[:, None]
    x = arith.sat(arith.shift_round(p.embed_q[ids].astype(np.int64) * p.embed_rq[0][ids, None],
                                    p.embed_rq[1][ids, None]), 32)
    for i, L in enumerate(p.layers):
        h = arith.rms_norm_int(x, p.eps_q, *L.n1, bits=nb)
        tap(i, "attn_norm", h)
        q = _mm(be, L.q, h).reshape(t, nh, hd)
        k = _mm(be, L.k, h).reshape(t, nkv, hd)
        v = _mm(be, L.v, h).reshape(t, nkv, hd)
        tap(i, "q", q)
        tap(i, "k", k)
        tap(i, "v", v)
        q = arith.rope_int(q, cos_q, sin_q, *L.q_rope)
        k = arith.rope_int(k, cos_q, sin_q, *L.k_rope)
        tap(i, "q_rope", q)
        tap(i, "k_rope", k)
        keys, vals = cache.append(i, k, v)                       # int8 (nkv, S, hd)
        qg = q.transpose(1, 0, 2).reshape(nkv, g * t, hd).astype(np.int64)
        s = arith.int_matmul(qg, keys.transpose(0, 2, 1)).reshape(nkv, g, t, -1)
        pr = arith.softmax_int(s, *L.sm, mask=mask)
        a = arith.int_matmul(pr.reshape(nkv, g * t, -1), vals).reshape(nh, t, hd)
        tap(i, "attn_sum", a.transpose(1, 0, 2))
        a = arith.requantize_to(a, *L.pv, nb)
        tap(i, "attn_out", a.transpose(1, 0, 2))
        y = _mm(be, L.o, a.transpose(1, 0, 2).reshape(t, nh * hd).astype(
            np.int64 if p.dynamic else np.int8))
        y = _to_resid(L.o, y, L.o_res)
        tap(i, "o", y)
        x = arith.residual_add(x, y)
        tap(i, "resid_attn", x)
        h = arith.rms_norm_int(x, p.eps_q, *L.n2, bits=nb)
        tap(i, "mlp_norm", h)
        gate = _mm(be, L.gate, h)
        up = _mm(be, L.up, h)
        if p.dynamic:
            m = arith.gate_up_int16(gate, up, L.silu, *L.gu)
        else:
            m = arith.gate_up_int(gate, up, L.silu, *L.gu)
        tap(i, "silu_up", m)
        y = _to_resid(L.down, _mm(be, L.down, m), L.down_res)
        tap(i, "down", y)
        x = arith.residual_add(x, y)
        tap(i, "resid_mlp", x)
    cache.advance(t)
    h = arith.rms_norm_int(x, p.eps_q, *p.norm, bits=nb)
    tap(-1, "final_norm", h)
    acc = _mm(be, p.head, h)
    if p.head.dynamic:
        logits = acc.astype(np.int32)
    else:
        logits = arith.requantize_to(acc, *p.head_rq, 32).astype(np.int32)
    tap(-1, "logits", logits)
    return logits
