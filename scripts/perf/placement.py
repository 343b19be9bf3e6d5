"""Placement: every matrix of a decoder layer, and the LM head, onto a rectangle of PEs.

Each matrix gets a share of the wafer's PEs in proportion to its weights and the
rows x cols rectangle, within that share, that minimises its time
(:func:`~.gemv_time.gemv_breakdown`) while its words (the mapping compiler's geometry,
:func:`~sparktile.compiler.mapping.gemv_words`) and the layer's KV cache fit each PE's SRAM.
All layers are alike; layers are split evenly over wafers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sparktile.errors import UserError

from ...compiler.cycle_model import GemvTiming
from ...compiler.mapping import Region, gemv_words
from ...golden_model.config import ModelConfig
from .gemv_time import gemv_breakdown
from .models import DTYPES, kv_bytes_per_token, layer_matrices, weight_bytes

__all__ = ["Placed", "PlacementError", "place_matrix", "place", "wafers_needed",
           "wafer_crossings"]


def _candidates(limit: int) -> list[int]:
    """1..limit, dense below 64 then geometric (the optimum is flat at large sizes)."""
    vals = set(range(1, min(limit, 64) + 1))
    v = 64.0
    while v < limit:
        v *= 1.08
        vals.add(min(limit, int(v)))
    vals.add(limit)
    return sorted(vals)


@dataclass
class Placed:
    name: str
    m: int
    n: int
    rows: int
    cols: int
    words: int
    cycles: float
    parts: dict

    @property
    def pes(self):
        return self.rows * self.cols


def place_matrix(name, m, n, pes, budget_bytes, hw, dtype, timing, reduce) -> Placed | None:
    """The fastest rows x cols <= ``pes`` region whose per-PE words fit ``budget_bytes``."""
    b = DTYPES[dtype]
    best = None
    if pes < 1:
        return None
    max_cols_useful = math.ceil(n * b / 4)
    for r in _candidates(min(hw.grid_rows, m, pes)):
        cmax = min(hw.grid_cols, pes // r, max_cols_useful)
        if cmax < 1:
            continue
        for c in {cmax, *[x for x in _candidates(cmax) if x > cmax // 4]}:
            geo = gemv_words(m, n * b, Region(0, 0, r, c), hw.acc_depth)
            if geo["words"] * 4 > budget_bytes:
                continue
            parts = gemv_breakdown(m, n, r, c, hw, dtype, timing, reduce=reduce)
            t = sum(parts.values())
            if best is None or t < best.cycles:
                best = Placed(name, m, n, r, c, geo["words"], t, parts)
    return best


class PlacementError(UserError, ValueError):
    """The model does not fit the given wafers."""


def place(cfg: ModelConfig, hw, dtype: str, context: int, wafers: int, timing: GemvTiming,
          reduce: str = "chain") -> dict:
    """Regions for one layer (all layers are alike) and the LM head on ``wafers`` wafers."""
    b = DTYPES[dtype]
    total_pes = hw.pes * wafers
    mats = layer_matrices(cfg)
    layer_elems = sum(m * n for _, m, n in mats)
    head = cfg.vocab_size * cfg.hidden_size
    embed = 0 if cfg.tie_word_embeddings else head
    all_elems = cfg.num_layers * layer_elems + head + embed
    pes_layer = int(total_pes * layer_elems / all_elems)
    if pes_layer > hw.pes:
        pes_layer = hw.pes
    kv_layer = 2 * context * cfg.num_kv_heads * cfg.head_dim * b
    kv_per_pe = kv_layer / max(pes_layer, 1)
    budget = hw.sram_usable_per_pe - kv_per_pe
    if budget <= 0:
        raise PlacementError(f"the KV cache alone ({kv_per_pe:.0f} B per PE) exceeds the "
                             f"usable SRAM per PE ({hw.sram_usable_per_pe} B)")
    placed = {}
    for name, m, n in mats:
        share = max(1, int(pes_layer * m * n / layer_elems))   # a tiny matrix gets one PE
        p = place_matrix(name, m, n, share, budget, hw, dtype, timing, reduce)
        if p is None:
            raise PlacementError(f"{name} ({m}x{n}) does not fit {share} PEs with {budget:.0f} "
                                 f"B free each")
        placed[name] = p
    pes_head = max(1, int(total_pes * head / all_elems))
    p_head = place_matrix("head", cfg.vocab_size, cfg.hidden_size, min(pes_head, hw.pes),
                          hw.sram_usable_per_pe, hw, dtype, timing, reduce)
    if p_head is None:
        raise PlacementError(f"the LM head ({cfg.vocab_size}x{cfg.hidden_size}) does not fit "
                             f"{pes_head} PEs")
    used_bytes = cfg.num_layers * sum(p.pes * p.words * 4 for p in placed.values()) + \
        p_head.pes * p_head.words * 4 + embed * b
    return {"layer": placed, "head": p_head, "pes_layer": pes_layer, "kv_per_pe": kv_per_pe,
            "weight_budget_per_pe": budget, "used_weight_bytes": used_bytes,
            "pes_used": cfg.num_layers * sum(p.pes for p in placed.values()) + p_head.pes,
            "total_pes": total_pes}


def wafers_needed(cfg, hw, dtype, context, timing, reduce="chain", limit=256) -> int:
    need = weight_bytes(cfg, dtype) + kv_bytes_per_token(cfg, dtype) * context
    n = max(1, math.ceil(need / (hw.pes * hw.sram_usable_per_pe)))
    while n <= limit:
        try:
            place(cfg, hw, dtype, context, n, timing, reduce)
            return n
        except PlacementError:
            n += 1
    raise PlacementError(f"{cfg.name} at context {context} does not fit {limit} wafers")


def wafer_crossings(wafers: int) -> int:
    """Wafer boundaries a token crosses (forward through each, and the sampled token back)."""
    return 0 if wafers <= 1 else wafers  # forward through every boundary, then back
