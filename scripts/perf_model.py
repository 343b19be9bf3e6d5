"""Performance model of LLM inference on a wafer-scale mesh, calibrated by RTL measurements.

Three parts:

* **Calibration** (:func:`fit_timing`): the free parameters of the PE issue's cycle model
  (:class:`~sparktile.compiler.cycle_model.GemvTiming`: per-task overheads and per-hop latencies)
  fitted by least squares to GEMV cycle counts measured on the RTL (``sparktile calibrate``).
  The model is linear in them; ``fill`` and ``drain`` always appear as a sum, so their sum is
  fitted and split in the ratio of the RTL reading (3:3).
* **Placement** (:func:`place`): every matrix of every decoder layer (and the LM head) gets a
  rectangle of the wafer grid, with the mapping compiler's geometry
  (:func:`~sparktile.compiler.mapping.gemv_words`: rows of W over region rows, packed words of x
  over region columns, partial sums reduced along rows), sized by its share of the weights and
  shaped to minimise the cycle model's time while its words and the layer's KV cache fit SRAM.
* **Estimate** (:func:`estimate`): decode time per token = the cycle model of each matrix,
  scaled to the preset's MAC lanes per data type and SRAM bandwidth, plus attention over the
  KV cache, norms, transfers between regions and crossings between wafers; prefill (time to
  first token) as the same regions used as a pipeline; energy from per-operation energies.

Every assumption the estimate makes is listed in :data:`ASSUMPTIONS` and in its report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparktile.errors import UserError

from ..compiler.cycle_model import GemvTiming, gemv_cycles
from ..compiler.mapping import Region, gemv_words
from ..golden_model.config import ModelConfig

__all__ = ["MODELS", "DTYPES", "ModelError", "CalibrationError", "load_model_config",
           "fit_timing", "predict_cycles", "load_calibration", "save_calibration", "place",
           "estimate", "gemv_breakdown", "CATEGORIES", "ASSUMPTIONS"]

#: Bytes per weight / KV element.
DTYPES = {"fp16": 2, "int8": 1}

#: Where decode time goes (the report's ``bound`` is the largest).
CATEGORIES = ("compute", "sram_bandwidth", "reduction", "task_overhead", "pipeline")

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


class ModelError(UserError, ValueError):
    """An unknown model preset or an unreadable config.json."""


class CalibrationError(UserError, ValueError):
    """Calibration data that cannot determine the parameters, or an unreadable file."""


# ---------------------------------------------------------------------- model presets

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


# ---------------------------------------------------------------------- calibration

FIT_PARAMS = ("fill_drain", "x_hop", "p_hop", "desc", "vec")
#: The GemvTiming fields a calibration sets (``fill_drain`` is split evenly into two).
FITTED_TIMING = ("fill", "desc", "x_hop", "vec", "p_hop", "drain")


def _passes(m_pe: int, acc_depth: int) -> list[int]:
    return [min(acc_depth, m_pe - p * acc_depth) for p in range(math.ceil(m_pe / acc_depth))]


def _features(run: dict, acc_depth: int) -> tuple[list[float], float]:
    """The cycle model as ``features . params + fixed`` for one run."""
    rows, cols = (int(v) for v in str(run["mesh"]).split("x"))
    m, n, b = run["m"], run["n"], run["batch"]
    m_pe = math.ceil(m / rows)
    nw = math.ceil(math.ceil(n / 4) / cols)
    ps = _passes(m_pe, acc_depth)
    fixed = sum(b * (r * nw + r) for r in ps)
    if not run.get("out_int32", False):
        fixed += GemvTiming().requant   # a pipeline depth read off the RTL, not fitted
    return [1.0, rows - 1.0, cols - 1.0, float(len(ps)), float(b * len(ps))], float(fixed)


def fit_timing(runs: list[dict], *, acc_depth: int = 256) -> tuple[GemvTiming, dict]:
    """Least-squares fit of the GemvTiming fields to measured ``runs``.

    Each run needs ``mesh`` ("RxC"), ``m``, ``n``, ``batch`` and ``cycles``. Returns the timing
    and a report (parameters, residual per run, rank).

    Raises
    ------
    CalibrationError
        If the runs cannot separate the parameters (too few meshes, batches or passes).
    """
    if len(runs) < len(FIT_PARAMS):
        raise CalibrationError(f"calibration needs at least {len(FIT_PARAMS)} runs, not "
                               f"{len(runs)}")
    rows = [_features(r, acc_depth) for r in runs]
    a = np.array([f for f, _ in rows])
    y = np.array([r["cycles"] - fixed for r, (_, fixed) in zip(runs, rows, strict=True)])
    rank = int(np.linalg.matrix_rank(a))
    if rank < len(FIT_PARAMS):
        raise CalibrationError(
            f"the runs determine only {rank} of the {len(FIT_PARAMS)} parameters "
            f"({', '.join(FIT_PARAMS)}): use meshes with at least three different (rows, cols) "
            "spans, more than one batch size and a case with two accumulator passes")
    sol, *_ = np.linalg.lstsq(a, y, rcond=None)
    p = dict(zip(FIT_PARAMS, (float(v) for v in sol), strict=True))
    timing = GemvTiming(fill=p["fill_drain"] / 2, desc=p["desc"], x_hop=p["x_hop"],
                        vec=p["vec"], p_hop=p["p_hop"], drain=p["fill_drain"] / 2)
    residuals = []
    for r in runs:
        pred = predict_cycles(r, timing, acc_depth)
        residuals.append({"mesh": r["mesh"], "m": r["m"], "n": r["n"], "batch": r["batch"],
                          "cycles": r["cycles"], "predicted": pred,
                          "error_pct": 100.0 * (pred - r["cycles"]) / r["cycles"]})
    return timing, {"params": p, "rank": rank, "runs": residuals,
                    "max_abs_error_pct": max(abs(x["error_pct"]) for x in residuals)}


def predict_cycles(run: dict, timing: GemvTiming, acc_depth: int = 256) -> float:
    rows, cols = (int(v) for v in str(run["mesh"]).split("x"))
    return gemv_cycles(run["m"], run["n"], run["batch"], rows, cols, acc_depth=acc_depth,
                       out_int32=run.get("out_int32", False), timing=timing)


CALIBRATION_FORMAT = "sparktile-calibration"


def default_calibration_path() -> Path:
    import os
    root = os.environ.get("SPARKTILE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sparktile") / "calibration.json"


def save_calibration(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": CALIBRATION_FORMAT, "version": 1, **data}, indent=1))


def load_calibration(path=None) -> tuple[GemvTiming, str]:
    """The calibrated timing: ``path``, else the user's ``calibrate`` output, else the shipped
    file (``scripts/data/calibration.json``)."""
    if path is None:
        user = default_calibration_path()
        if user.is_file():
            path = user
    try:
        if path is None:
            from importlib.resources import files
            text = files("sparktile.scripts").joinpath("data/calibration.json").read_text()
            origin = "shipped scripts/data/calibration.json"
        else:
            text = Path(path).read_text()
            origin = str(path)
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
            raise CalibrationError(f"calibration file {origin!r}: format must be "
                                   f"{CALIBRATION_FORMAT!r}")
        t = d["timing"]
        # Only the fitted costs come from the file: ``requant``, ``link`` and ``ramp`` are
        # pipeline depths of the RTL configuration (and files older than them lack them).
        return GemvTiming(**{k: float(t[k]) for k in FITTED_TIMING}), origin
    except CalibrationError:
        raise
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"cannot read calibration {str(path)!r}: {exc}") from None


# ---------------------------------------------------------------------- one matrix

def gemv_breakdown(m: int, n: int, rows: int, cols: int, hw, dtype: str, timing: GemvTiming,
                   *, batch: int = 1, reduce: str = "chain") -> dict:
    """Cycles of an M x N GEMV on a rows x cols region, split by :data:`CATEGORIES`.

    With ``reduce="chain"`` and 4 int8 lanes fed by a 4 B/cycle SRAM this is exactly
    :func:`~sparktile.compiler.cycle_model.gemv_cycles` (a test checks it).
    """
    b = DTYPES[dtype]
    lanes = hw.lanes(dtype)
    eff = min(float(lanes), hw.sram_read_bytes_per_cycle / b)
    n_compute = math.ceil(n * 4 / lanes)       # int8-equivalent columns of the RTL's 4-lane PE
    n_eff = math.ceil(n * 4 / eff)
    nw_c = math.ceil(math.ceil(n_compute / 4) / cols)
    nw_e = math.ceil(math.ceil(n_eff / 4) / cols)
    m_pe = math.ceil(m / rows)
    ps = _passes(m_pe, hw.acc_depth)
    hop = hw.hop_cycles
    x_hop = timing.x_hop * hop
    p_hop = timing.p_hop - 1.0 + hop
    if reduce == "tree":
        chain = (p_hop - hop) * math.ceil(math.log2(cols)) + hop * (cols - 1) if cols > 1 else 0
    else:
        chain = p_hop * (cols - 1)
    out = {
        "compute": float(sum(batch * r * nw_c for r in ps)),
        "sram_bandwidth": float(sum(batch * r * (nw_e - nw_c) for r in ps)),
        "reduction": float(sum(batch * r for r in ps) + chain + x_hop * (rows - 1)
                           + timing.fill + timing.drain + timing.requant),
        "task_overhead": float(sum(timing.desc + batch * timing.vec for _ in ps)),
        "pipeline": 0.0,
    }
    return out


def _per_token(m, n, rows, cols, hw, dtype, timing) -> float:
    """Extra cycles per additional vector (the stage time when pipelining a prompt)."""
    a = gemv_breakdown(m, n, rows, cols, hw, dtype, timing, batch=1)
    b = gemv_breakdown(m, n, rows, cols, hw, dtype, timing, batch=2)
    return sum(b.values()) - sum(a.values())


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


# ---------------------------------------------------------------------- the whole model

def layer_matrices(cfg: ModelConfig) -> list[tuple[str, int, int]]:
    d, hd, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    qd, kvd = cfg.num_heads * hd, cfg.num_kv_heads * hd
    return [("q", qd, d), ("k", kvd, d), ("v", kvd, d), ("o", d, qd),
            ("gate", f, d), ("up", f, d), ("down", d, f)]


def kv_bytes_per_token(cfg: ModelConfig, dtype: str) -> int:
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * DTYPES[dtype]


def weight_bytes(cfg: ModelConfig, dtype: str) -> int:
    return model_params(cfg) * DTYPES[dtype]


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


def _zero():
    return dict.fromkeys(CATEGORIES, 0.0)


def _add(acc, parts, k=1.0):
    for key, v in parts.items():
        acc[key] += k * v


def _transfer(length: int, b: int, src: Placed, dst_cols: int, hw) -> float:
    links = max(1, min(src.rows, dst_cols))
    return hw.hop_cycles * (src.rows + dst_cols) + math.ceil(
        length * b / (hw.link_bits / 8 * links))


def _reduce_side(side: float, hw, timing, reduce) -> float:
    p_hop = timing.p_hop - 1.0 + hw.hop_cycles
    if side <= 1:
        return 0.0
    if reduce == "tree":
        return (p_hop - hw.hop_cycles) * math.ceil(math.log2(side)) + hw.hop_cycles * (side - 1)
    return p_hop * (side - 1)


def _attention(cfg, hw, dtype, timing, ctx, pes, reduce) -> dict:
    b = DTYPES[dtype]
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    macs = 2.0 * ctx * qd
    kv = 2.0 * ctx * kvd * b
    compute = macs / (pes * hw.lanes(dtype))
    sram = kv / (pes * hw.sram_read_bytes_per_cycle)
    side = math.sqrt(pes)
    return {"compute": compute, "sram_bandwidth": max(0.0, sram - compute),
            "reduction": 3 * _reduce_side(side, hw, timing, reduce)
            + timing.x_hop * hw.hop_cycles * side,
            "task_overhead": 3 * (timing.desc + timing.vec), "pipeline": 0.0}


def token_cycles(cfg, hw, dtype, timing, pl, ctx, reduce="chain") -> dict:
    """Cycles of one decode token at context ``ctx``, by category, for one layer and total."""
    b = DTYPES[dtype]
    L = pl["layer"]
    d, f = cfg.hidden_size, cfg.intermediate_size
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    layer = _zero()
    qkv = max((L["q"], L["k"], L["v"]), key=lambda p: p.cycles)
    _add(layer, qkv.parts)
    attn = _attention(cfg, hw, dtype, timing, ctx, pl["pes_layer"], reduce)
    _add(layer, attn)
    _add(layer, L["o"].parts)
    gu = max((L["gate"], L["up"]), key=lambda p: p.cycles)
    _add(layer, gu.parts)
    _add(layer, L["down"].parts)
    side = math.sqrt(pl["pes_layer"])
    layer["reduction"] += _reduce_side(L["o"].rows, hw, timing, reduce) + \
        _reduce_side(L["down"].rows, hw, timing, reduce)
    layer["pipeline"] += (
        _transfer(qd + 2 * kvd, b, qkv, int(side), hw)        # q, k, v to attention
        + _transfer(qd, b, L["o"], L["o"].cols, hw)            # attention to o (its rows)
        + _transfer(d, b, L["o"], gu.cols, hw)                 # o to gate/up
        + _transfer(f, b, gu, L["down"].cols, hw)              # gate*up to down
        + _transfer(d, b, L["down"], L["q"].cols, hw))         # down to the next layer
    total = _zero()
    _add(total, layer, cfg.num_layers)
    _add(total, pl["head"].parts)
    total["reduction"] += _reduce_side(pl["head"].rows, hw, timing, reduce)  # argmax
    return {"layer": layer, "total": total}


def _crossings(wafers: int) -> int:
    return 0 if wafers <= 1 else wafers  # forward through every boundary, then back


def _energy(cfg, hw, dtype, ctx, pl, wafers) -> dict:
    b = DTYPES[dtype]
    s = hw.energy_node_scale
    e_mac = hw.values[f"e_mac_{dtype}_pj"]
    qd, kvd = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    mats = [(p, cfg.num_layers) for p in pl["layer"].values()] + [(pl["head"], 1)]
    macs = sum(k * p.m * p.n for p, k in mats) + cfg.num_layers * 2 * ctx * qd
    sram = sum(k * p.m * p.n * b for p, k in mats) + cfg.num_layers * 2 * ctx * kvd * b
    # x multicast down each region column, partial sums (32 bit) along each row.
    bit_hops = sum(k * (p.n * b * 8 * p.rows + p.m * 32 * max(p.cols - 1, 0)) for p, k in mats)
    off = _crossings(wafers) * cfg.hidden_size * b * 8
    parts = {"mac_j": macs * e_mac * s * 1e-12, "sram_j": sram * hw.e_sram_pj_per_byte * s * 1e-12,
             "fabric_j": bit_hops * hw.hop_mm * hw.e_link_fj_per_bit_mm * s * 1e-15,
             "offwafer_j": off * hw.e_offwafer_pj_per_bit * 1e-12}
    return {"per_token_j": sum(parts.values()), **parts, "macs": macs, "sram_bytes": sram}


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


def estimate(cfg: ModelConfig, hw, dtype: str, *, context: int, prompt_tokens: int,
             timing: GemvTiming, wafers: int | None = None, reduce: str = "chain") -> dict:
    """The full report for one model on one hardware description (see the module docstring)."""
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
    tc = token_cycles(cfg, hw, dtype, timing, pl, context, reduce)
    cross_s = _crossings(n_w) * (hw.wafer_link_latency_s
                                 + cfg.hidden_size * b / hw.wafer_link_bytes_per_s)
    parts_s = {k: v / clk for k, v in tc["total"].items()}
    parts_s["pipeline"] += cross_s
    t_token = sum(parts_s.values())
    bound = max(parts_s, key=parts_s.get)

    # Prefill: the regions as a pipeline.
    stage = {name: _per_token(p.m, p.n, p.rows, p.cols, hw, dtype, timing)
             for name, p in pl["layer"].items()}
    stage["head"] = _per_token(pl["head"].m, pl["head"].n, pl["head"].rows, pl["head"].cols,
                               hw, dtype, timing)
    at = _attention(cfg, hw, dtype, timing, max(prompt_tokens // 2, 1), pl["pes_layer"], reduce)
    stage["attention"] = at["compute"] + at["sram_bandwidth"]
    stage_s = {k: v / clk for k, v in stage.items()}
    if n_w > 1:
        stage_s["wafer_link"] = cfg.hidden_size * b / hw.wafer_link_bytes_per_s
    slowest = max(stage_s, key=stage_s.get)
    tc_prompt = token_cycles(cfg, hw, dtype, timing, pl, prompt_tokens, reduce)
    latency_prompt = sum(tc_prompt["total"].values()) / clk + cross_s
    ttft = latency_prompt + (prompt_tokens - 1) * stage_s[slowest]

    # Capacity.
    kv_tok = kv_bytes_per_token(cfg, dtype)
    capacity = n_w * hw.pes * hw.sram_usable_per_pe
    free = capacity - pl["used_weight_bytes"]
    max_ctx = int(free // kv_tok) if free > 0 else 0

    # Energy and power.
    en = _energy(cfg, hw, dtype, context, pl, n_w)
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
        "assumptions": ASSUMPTIONS,
    }
    return report
