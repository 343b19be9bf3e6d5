"""Dynamic energy per token: MACs, SRAM reads, fabric hops and off-wafer links.

Per-operation energies come from the hardware preset (``e_*`` fields, with their sources in
:mod:`.hardware`), scaled by its ``energy_node_scale`` (off-wafer links excepted). No
leakage, clock tree, control, I/O or cooling: the estimate says so in its assumptions.
"""

from __future__ import annotations

from .models import DTYPES
from .placement import wafer_crossings

__all__ = ["token_energy"]


def token_energy(cfg, hw, dtype, ctx, pl, wafers) -> dict:
    """Joules of one decode token at context ``ctx`` on placement ``pl``, by part."""
    b = DTYPES[dtype]
    s = hw.energy_node_scale
    e_mac = hw.values[f"e_mac_{dtype}_pj"]
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    mats = [(p, cfg.num_layers) for p in pl["layer"].values()] + [(pl["head"], 1)]
    macs = sum(k * p.m * p.n for p, k in mats) + cfg.num_layers * 2 * ctx * qd
    sram = sum(k * p.m * p.n * b for p, k in mats) + cfg.num_layers * 2 * ctx * kvd * b
    # x multicast down each region column, partial sums (32 bit) along each row.
    bit_hops = sum(k * (p.n * b * 8 * p.rows + p.m * 32 * max(p.cols - 1, 0)) for p, k in mats)
    off = wafer_crossings(wafers) * cfg.hidden_size * b * 8
    parts = {"mac_j": macs * e_mac * s * 1e-12, "sram_j": sram * hw.e_sram_pj_per_byte * s * 1e-12,
             "fabric_j": bit_hops * hw.hop_mm * hw.e_link_fj_per_bit_mm * s * 1e-15,
             "offwafer_j": off * hw.e_offwafer_pj_per_bit * 1e-12}
    return {"per_token_j": sum(parts.values()), **parts, "macs": macs, "sram_bytes": sram}
