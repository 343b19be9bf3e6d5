"""The estimate: one model on one wafer preset, from the calibrated tile to tokens/s.

Decode time per token is the time of each placed matrix (:mod:`.gemv_time`, :mod:`.placement`),
plus attention over the KV cache, norms, transfers between regions and crossings between
wafers; prefill (time to first token) uses the same regions as a pipeline; energy and power
come from :mod:`.energy`; capacity (the largest context) from the SRAM left after the
weights. Every assumption the estimate makes is listed in :data:`ASSUMPTIONS` and in its
report.
"""

from __future__ import annotations

import math

from ...compiler.cycle_model import GemvTiming
from ...golden_model.config import ModelConfig
from .energy import token_energy
from .gemv_time import CATEGORIES, per_vector_cycles, reduction_cycles
from .models import DTYPES, kv_bytes_per_token, model_params, weight_bytes
from .placement import Placed, place, wafer_crossings, wafers_needed

__all__ = ["estimate", "token_cycles", "ASSUMPTIONS", "DECODER_ASSUMPTIONS", "assumptions",
           "decoder_layer_cycles"]

ASSUMPTIONS = [
    "Single user, batch 1, no speculative decoding, greedy sampling on the wafer.",
    ("Weight-stationary: every weight and the KV cache stay in PE SRAM; nothing streams from "
    "off-wafer memory during inference."),
    ("Each matrix is placed as compiler.mapping places it (rows of W over region rows, packed "
    "words of x over region columns, partial sums reduced west to east); regions are checked "
    "by area only (rectangles assumed to pack into the grid)."),
    ("Matrix time is compiler.cycle_model.gemv_cycles with the calibrated GemvTiming; n is scaled "
    "by 4 / lanes so a PE with L lanes does L MACs per cycle; if the SRAM cannot feed L "
    "elements per cycle the lanes are reduced to what it can (the 'sram_bandwidth' term)."),
    ("The calibrated per-task and per-hop costs (cycles) of the RTL PE are taken for the "
    "wafer's PE; x_hop and p_hop are rescaled by the preset's cycles per hop."),
    ("PEs are shared among matrices in proportion to their weight bytes; each layer's KV cache "
    "is spread evenly over that layer's PEs."),
    ("q, k, v run in parallel on their own regions, then attention, o, gate and up in "
    "parallel, down; the LM head after the last layer."),
    ("Attention for one token: 2 x context x q_dim MACs over the layer's PEs, bounded by reading "
    "the layer's K and V once from SRAM; three reductions (max, sum, output) across the layer "
    "block's side."),
    ("Two RMSNorms per layer each cost one reduction along the producing region's rows; RoPE, "
    "SiLU and residual adds are element-wise on the PEs that hold the data and are not charged."),
    ("A vector moving between regions crosses rows_src + cols_dst hops and is serialised over "
    "min(rows_src, cols_dst) links of link_bits per cycle."),
    ("Layers are split evenly over wafers; a token crosses every wafer boundary once forward and "
    "once back (sampled token to the first wafer), each crossing costing wafer_link_latency_s "
    "plus hidden_size x bytes / wafer_link_bytes_per_s."),
    ("Prefill: the prompt streams through the regions as a pipeline; TTFT = one token's latency "
    "+ (prompt - 1) x the slowest stage's time per token (attention at half the prompt). "
    "Network and host time are not included."),
    ("Energy: MACs x e_mac + bytes read from SRAM (weights, KV) x e_sram + bits x hops x hop "
    "length x e_link + off-wafer bits x e_offwafer, all x energy_node_scale (except off-wafer). "
    "Dynamic energy only: no leakage, clock tree, control, I/O or cooling."),
    ("Largest context: free SRAM after weights divided by KV bytes per token (KV moved freely "
    "between PEs); the model's own max_position_embeddings is reported beside it."),
    "Model shapes only (no weights); KV cache in the weights' data type.",
]


#: The attention and norm lines of :data:`ASSUMPTIONS` when the on-fabric decoder's calibrated
#: terms are used (:mod:`.decoder_terms`), in their place.
DECODER_ASSUMPTIONS = {
    ASSUMPTIONS[7]: (
        "Attention for one token runs as the RTL's on-fabric decoder runs it, with its per-op "
        "terms fitted to decodes whose cycles are within 2 % of the RTL counter's (scripts/perf/"
        "decoder_terms.py, `sparktile calibrate`): the layer's KV cache spread by position over "
        "its PEs (slots = ceil(context / PEs) a PE), every PE scoring, exponentiating and "
        "weighting its slots for every head, the heads' maxima, sums and outputs reduced through "
        "trees to one PE and sent back (the PEs numbered by their distance from it, the trees "
        "pruned to the first ceil(context / slots), whose depth is the farthest one's). Per "
        "layer, for the scores, the softmax and the weighted sum: fixed + per head + per hop "
        "of those trees + per head and slot "
        "+ per head, slot and GEMV word of its group's key row (head_dim / lanes: the keys "
        "are kept by KV group, so a head's score reads only its group's) + per "
        "head, value channel and word "
        "(head_dim x ceil(slots / lanes)) + per head and output channel (and as much again "
        "where the sums reach the root on two streams, the KV PEs in both of its subtrees, as "
        "the compiler places them), and for the softmax "
        "per instruction and element of a PE's max and sum over its slots (the compiler's "
        "choice: nothing at one slot, an element-wise op per slot over the heads, or a "
        "reduction per head); a term's cycles are "
        "the RTL core's (one instruction issue, one element a cycle)."),
    ASSUMPTIONS[8]: (
        "Two RMSNorms per layer and the final one, each as the on-fabric decoder's (calibrated, "
        "as attention): fixed + per channel a PE holds (ceil(hidden / PEs)) + per hop of the "
        "trees pruned to the PEs holding channels + "
        "per 32-bit word of the hidden vector gathered and sent back; the wait for the matmuls "
        "before a norm is fitted apart and not charged (the matmuls are timed above). RoPE, SiLU "
        "and residual adds are element-wise on the PEs that hold the data and are not charged."),
}


def assumptions(decoder: dict | None) -> list[str]:
    """:data:`ASSUMPTIONS`, with the attention and norm lines of :data:`DECODER_ASSUMPTIONS`
    when the decoder's calibrated terms are used."""
    if decoder is None:
        return list(ASSUMPTIONS)
    return [DECODER_ASSUMPTIONS.get(a, a) for a in ASSUMPTIONS]


def decoder_layer_cycles(cfg, hw, dtype, decoder: dict, ctx: int, pes: int) -> dict:
    """One layer's attention and norms (and one norm alone, ``"norm"``) by category, from the
    decoder's calibrated terms on a block of ``pes`` PEs (see :data:`DECODER_ASSUMPTIONS`)."""
    from .decoder_terms import (
        ATTENTION_OPS,
        CATEGORY,
        decoder_op_cycles,
        kv_placement,
        prefix_depth,
        summed_depth,
        summed_streams,
    )
    # a square block, its PEs numbered by their distance from the root as the decoder's
    # workers are: each op's trees reach only the PEs that hold its data
    side = max(2, round(math.sqrt(pes)))
    slots = math.ceil(ctx / pes) if ctx > 0 else 0
    channels = math.ceil(cfg.hidden_size / pes)
    # one slot more where that keeps the root's sums on one stream, as the compiler places it
    slots, kv_pes = kv_placement(side, side, ctx, slots, hw.lanes(dtype)) if slots else (0, 1)
    cyc = decoder_op_cycles(
        decoder, heads=cfg.num_heads, kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        slots=slots, two_streams=summed_streams(side, side, kv_pes) == 2,
        kv_depth=summed_depth(side, side, kv_pes),
        channel_depth=prefix_depth(side, side, math.ceil(cfg.hidden_size / channels)),
        channels=channels, hidden=cfg.hidden_size,
        lanes=hw.lanes(dtype), word_bytes=DTYPES[dtype])
    attention, norm = _zero(), _zero()
    for op in ATTENTION_OPS:
        for term, v in cyc[op].items():
            attention[CATEGORY[term]] += v
    for term, v in cyc["norm"].items():
        if CATEGORY[term] is not None:
            norm[CATEGORY[term]] += v
    return {"attention": attention, "norm": norm}


def _zero():
    return dict.fromkeys(CATEGORIES, 0.0)


def _add(acc, parts, k=1.0):
    for key, v in parts.items():
        acc[key] += k * v


def _transfer(length: int, b: int, src: Placed, dst_cols: int, hw) -> float:
    links = max(1, min(src.rows, dst_cols))
    return hw.hop_cycles * (src.rows + dst_cols) + math.ceil(
        length * b / (hw.link_bits / 8 * links))


def _attention(cfg, hw, dtype, timing, ctx, pes, reduce) -> dict:
    b = DTYPES[dtype]
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    macs = 2.0 * ctx * qd
    kv = 2.0 * ctx * kvd * b
    compute = macs / (pes * hw.lanes(dtype))
    sram = kv / (pes * hw.sram_read_bytes_per_cycle)
    side = math.sqrt(pes)
    return {"compute": compute, "sram_bandwidth": max(0.0, sram - compute),
            "reduction": 3 * reduction_cycles(side, hw, timing, reduce)
            + timing.x_hop * hw.hop_cycles * side,
            "task_overhead": 3 * (timing.desc + timing.vec), "pipeline": 0.0}


def token_cycles(cfg, hw, dtype, timing, pl, ctx, reduce="chain", decoder=None) -> dict:
    """Cycles of one decode token at context ``ctx``, by category, for one layer and total.
    With ``decoder`` (the on-fabric decoder's calibrated terms) attention and norms are its;
    without, the analytic model of :data:`ASSUMPTIONS`."""
    b = DTYPES[dtype]
    L = pl["layer"]
    d, f = cfg.hidden_size, cfg.intermediate_size
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    layer = _zero()
    qkv = max((L["q"], L["k"], L["v"]), key=lambda p: p.cycles)
    _add(layer, qkv.parts)
    if decoder is None:
        attn = _attention(cfg, hw, dtype, timing, ctx, pl["pes_layer"], reduce)
    else:
        dec = decoder_layer_cycles(cfg, hw, dtype, decoder, ctx, pl["pes_layer"])
        attn = dec["attention"]
    _add(layer, attn)
    _add(layer, L["o"].parts)
    gu = max((L["gate"], L["up"]), key=lambda p: p.cycles)
    _add(layer, gu.parts)
    _add(layer, L["down"].parts)
    side = math.sqrt(pl["pes_layer"])
    if decoder is None:
        layer["reduction"] += reduction_cycles(L["o"].rows, hw, timing, reduce) + \
            reduction_cycles(L["down"].rows, hw, timing, reduce)
    else:
        _add(layer, dec["norm"], 2.0)
    layer["pipeline"] += (
        _transfer(qd + 2 * kvd, b, qkv, int(side), hw)        # q, k, v to attention
        + _transfer(qd, b, L["o"], L["o"].cols, hw)            # attention to o (its rows)
        + _transfer(d, b, L["o"], gu.cols, hw)                 # o to gate/up
        + _transfer(f, b, gu, L["down"].cols, hw)              # gate*up to down
        + _transfer(d, b, L["down"], L["q"].cols, hw))         # down to the next layer
    total = _zero()
    _add(total, layer, cfg.num_layers)
    _add(total, pl["head"].parts)
    total["reduction"] += reduction_cycles(pl["head"].rows, hw, timing, reduce)  # argmax
    if decoder is not None:
        _add(total, dec["norm"])                                             # the final norm
    return {"layer": layer, "total": total}


def estimate(cfg: ModelConfig, hw, dtype: str, *, context: int, prompt_tokens: int,
             timing: GemvTiming, wafers: int | None = None, reduce: str = "chain",
             decoder: dict | None = None) -> dict:
    """The full report for one model on one hardware description (see the module docstring).
    ``decoder``: the on-fabric decoder's calibrated terms (:func:`~.calibration.
    load_decoder_terms`) for attention and norms; None keeps the analytic model."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if hw.lanes(dtype) < 1:
        raise ValueError(f"the {hw.name} preset has no {dtype} datapath (lanes_{dtype} = 0); "
                         f"use --dtype int8 or --set lanes_{dtype}=N")
    b = DTYPES[dtype]
    need = wafers_needed(cfg, hw, dtype, context, timing, reduce)
    used = wafers or need
    fits = used >= need
    n_w = used if fits else need  # too few wafers: performance is given on the wafers needed
    pl = place(cfg, hw, dtype, context, n_w, timing, reduce)
    clk = hw.clock_hz
    tc = token_cycles(cfg, hw, dtype, timing, pl, context, reduce, decoder)
    cross_s = wafer_crossings(n_w) * (hw.wafer_link_latency_s
                                 + cfg.hidden_size * b / hw.wafer_link_bytes_per_s)
    parts_s = {k: v / clk for k, v in tc["total"].items()}
    parts_s["pipeline"] += cross_s
    t_token = sum(parts_s.values())
    bound = max(parts_s, key=parts_s.get)

    # Prefill: the regions as a pipeline.
    stage = {name: per_vector_cycles(p.m, p.n, p.rows, p.cols, hw, dtype, timing)
             for name, p in pl["layer"].items()}
    stage["head"] = per_vector_cycles(pl["head"].m, pl["head"].n, pl["head"].rows, pl["head"].cols,
                               hw, dtype, timing)
    if decoder is None:
        at = _attention(cfg, hw, dtype, timing, max(prompt_tokens // 2, 1), pl["pes_layer"],
                        reduce)
    else:
        at = decoder_layer_cycles(cfg, hw, dtype, decoder, max(prompt_tokens // 2, 1),
                                  pl["pes_layer"])["attention"]
    stage["attention"] = at["compute"] + at["sram_bandwidth"]
    stage_s = {k: v / clk for k, v in stage.items()}
    if n_w > 1:
        stage_s["wafer_link"] = cfg.hidden_size * b / hw.wafer_link_bytes_per_s
    slowest = max(stage_s, key=stage_s.get)
    tc_prompt = token_cycles(cfg, hw, dtype, timing, pl, prompt_tokens, reduce, decoder)
    latency_prompt = sum(tc_prompt["total"].values()) / clk + cross_s
    ttft = latency_prompt + (prompt_tokens - 1) * stage_s[slowest]

    # Capacity.
    kv_tok = kv_bytes_per_token(cfg, dtype)
    capacity = n_w * hw.pes * hw.sram_usable_per_pe
    free = capacity - pl["used_weight_bytes"]
    max_ctx = int(free // kv_tok) if free > 0 else 0

    # Energy and power.
    en = token_energy(cfg, hw, dtype, context, pl, n_w)
    tps = 1.0 / t_token
    stages = 5 * cfg.num_layers + 1
    users_sram = max(1, int(free // (kv_tok * context))) if context else stages
    agg = min(stages, users_sram) / t_token
    agg = min(agg, 1.0 / max(stage_s.values()))
    roof_compute = en["macs"] / (n_w * hw.pes * hw.lanes(dtype) * clk)
    roof_sram = en["sram_bytes"] / (n_w * hw.pes * hw.sram_read_bytes_per_cycle * clk)
    report = {
        "model": cfg.name, "params": model_params(cfg), "dtype": dtype,
        "hardware": hw.name, "reduce": reduce, "context": context,
        "prompt_tokens": prompt_tokens,
        "fit": {
            "weights_bytes": weight_bytes(cfg, dtype),
            "kv_bytes_per_token": kv_tok, "kv_bytes": kv_tok * context,
            "sram_usable_bytes_per_wafer": hw.pes * hw.sram_usable_per_pe,
            "wafers_needed": need, "wafers": used, "fits": fits,
            "max_context": max_ctx,
            "model_max_position_embeddings": cfg.max_position_embeddings,
        },
        "placement": {
            "pes_per_layer": pl["pes_layer"], "pes_used": pl["pes_used"],
            "pes_total": pl["total_pes"], "kv_bytes_per_pe": pl["kv_per_pe"],
            "regions": {k: {"rows": p.rows, "cols": p.cols, "m": p.m, "n": p.n,
                            "sram_words_per_pe": p.words, "cycles": p.cycles}
                        for k, p in {**pl["layer"], "head": pl["head"]}.items()},
        },
        "decode": {
            "tokens_per_s_per_user": tps, "time_per_token_s": t_token,
            "breakdown_s": parts_s, "bound": bound,
            "layer_cycles": tc["layer"], "wafer_crossings_s": cross_s,
            "aggregate_tokens_per_s": agg,
            "roofline_tokens_per_s": 1.0 / max(roof_compute, roof_sram),
        },
        "prefill": {"ttft_s": ttft, "first_token_latency_s": latency_prompt,
                    "stage_s": stage_s, "slowest_stage": slowest},
        "energy": {
            **en,
            "power_w_single_user": en["per_token_j"] * tps,
            "power_w_aggregate": en["per_token_j"] * agg,
            "vendor_system_power_w": hw.system_power_w * n_w,
            "vendor_pe_peak_power_w": hw.pe_peak_power_w * hw.cores * n_w,
            "vendor_j_per_token_single_user": hw.system_power_w * n_w / tps,
        },
        "assumptions": assumptions(decoder),
        "decoder_terms": "calibrated" if decoder is not None else "analytic",
    }
    return report
