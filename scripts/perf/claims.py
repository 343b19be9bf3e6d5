"""Claims checks: published statements about wafer-scale serving, against the model.

A claim set is a list of :class:`Claim`; :func:`check_claims` evaluates each for a grid of
plausible models and data types and gives a verdict:

* ``consistent`` — the model reaches the claimed figure;
* ``optimistic by xN`` — the model does not, but no physical bound (roofline of compute and
  SRAM bandwidth, SRAM capacity, energy per operation) rules it out;
* ``physically impossible`` — it exceeds such a bound for every model considered.
"""

from __future__ import annotations

from dataclasses import dataclass

from .estimate import estimate
from .models import kv_bytes_per_token, load_model_config, weight_bytes

__all__ = ["CLAIM_SETS", "check_claims", "CODE_BYTES_PER_LINE", "CODE_BYTES_PER_TOKEN"]

#: Measured: CPython 3.11.7 standard library, top-level and one level of packages, tests
#: excluded: 583 files, 11,028,435 bytes, 296,369 lines -> 37.2 bytes per line.
CODE_BYTES_PER_LINE = 37.2
#: Assumption (not sourced): a BPE code tokenizer averages ~3.6 bytes of Python per token.
CODE_BYTES_PER_TOKEN = 3.6


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    value: float
    unit: str
    baseline: str


SEED_ARTICLE = [
    Claim("ttft", "first tokens in 9-12 ms", 12e-3, "s", "120-180 ms in the cloud"),
    Claim("decode", "21,000+ tokens/s on Python", 21_000.0, "tokens/s",
          "up to 450 tokens/s in the cloud"),
    Claim("context", "256k tokens of hardware context", 256_000.0, "tokens", "128k"),
    Claim("power", "42 W per chip", 42.0, "W", "~350 W per cloud server"),
    Claim("project", "a 200,000-line project held in context at once", 200_000.0, "lines",
          ""),
]

CLAIM_SETS = {"seed-article": SEED_ARTICLE}

#: The plausible code models: 7B to 70B, fp16 and int8.
CLAIM_MODELS = ("qwen2.5-coder-7b", "llama-3.1-8b", "qwen2.5-coder-32b", "llama-3.1-70b")
CLAIM_DTYPES = ("fp16", "int8")


def _ratio(x: float) -> str:
    return f"x{x:.1f}" if x < 10 else f"x{x:.0f}"


def check_claims(name: str, hw, timing, *, context: int, prompt_tokens: int,
                 reduce: str = "chain", decoder: dict | None = None) -> dict:
    """Evaluate claim set ``name`` on ``hw`` (one wafer = one 'chip'); ``decoder``: the
    on-fabric decoder's calibrated terms for attention and norms (None: analytic)."""
    claims = CLAIM_SETS[name]
    rows = []
    for model in CLAIM_MODELS:
        cfg, _ = load_model_config(model)
        for dtype in CLAIM_DTYPES:
            r = estimate(cfg, hw, dtype, context=context, prompt_tokens=prompt_tokens,
                         timing=timing, reduce=reduce, decoder=decoder)
            rows.append({"model": model, "dtype": dtype, "params_b": r["params"] / 1e9,
                         "report": r, "cfg": cfg})
    out = []
    for c in claims:
        out.append(_CHECKS[c.key](c, rows, hw))
    return {"claims": name, "hardware": hw.name, "context": context,
            "prompt_tokens": prompt_tokens,
            "models": [f"{x['model']} {x['dtype']} ({x['params_b']:.1f}B)" for x in rows],
            "results": out}


def _per_model(rows, fn):
    return [{"model": x["model"], "dtype": x["dtype"], **fn(x)} for x in rows]


def _ttft(c, rows, hw):
    per = _per_model(rows, lambda x: {
        "ttft_s": x["report"]["prefill"]["ttft_s"],
        "wafers": x["report"]["fit"]["wafers"]})
    best = min(p["ttft_s"] for p in per)
    worst = max(p["ttft_s"] for p in per)
    if worst <= c.value:
        verdict = "consistent"
        why = (f"the model's TTFT for a {rows[0]['report']['prompt_tokens']}-token prompt is "
               f"{best * 1e3:.2f}-{worst * 1e3:.2f} ms on the wafer (compute only; the claim "
               f"also includes network and host time, which the model does not)")
    else:
        verdict = f"optimistic by {_ratio(worst / c.value)} for the largest model"
        why = f"TTFT {best * 1e3:.2f}-{worst * 1e3:.2f} ms against {c.value * 1e3:.0f} ms"
    return {"claim": c.text, "baseline": c.baseline, "verdict": verdict, "reason": why,
            "per_model": per}


def _decode(c, rows, hw):
    per = _per_model(rows, lambda x: {
        "tokens_per_s_per_user": x["report"]["decode"]["tokens_per_s_per_user"],
        "roofline_tokens_per_s": x["report"]["decode"]["roofline_tokens_per_s"],
        "aggregate_tokens_per_s": x["report"]["decode"]["aggregate_tokens_per_s"],
        "bound": x["report"]["decode"]["bound"], "wafers": x["report"]["fit"]["wafers"]})
    best = max(per, key=lambda p: p["tokens_per_s_per_user"])
    if best["tokens_per_s_per_user"] >= c.value:
        verdict, why = "consistent", (f"{best['model']} {best['dtype']} reaches "
                                      f"{best['tokens_per_s_per_user']:,.0f} tokens/s per user")
    elif all(p["roofline_tokens_per_s"] < c.value for p in per):
        verdict = "physically impossible"
        why = "above the compute/SRAM-bandwidth roofline of every model considered"
    else:
        ratio = c.value / best["tokens_per_s_per_user"]
        verdict = f"optimistic by {_ratio(ratio)}"
        why = (f"best single-user decode is {best['tokens_per_s_per_user']:,.0f} tokens/s "
               f"({best['model']} {best['dtype']}, bound by {best['bound']}); the roofline "
               f"(every PE busy, no latency) allows {best['roofline_tokens_per_s']:,.0f}, so only "
               "a mapping that hides the layer-by-layer latency (or speculative decoding, "
               "not modelled) could reach it; many users together reach "
               f"{best['aggregate_tokens_per_s']:,.0f} tokens/s in aggregate")
    return {"claim": c.text, "baseline": c.baseline, "verdict": verdict, "reason": why,
            "per_model": per}


def _context(c, rows, hw):
    cap = hw.pes * hw.sram_usable_per_pe
    per = []
    for x in rows:
        need = weight_bytes(x["cfg"], x["dtype"]) + kv_bytes_per_token(x["cfg"], x["dtype"]) \
            * c.value
        free = cap - weight_bytes(x["cfg"], x["dtype"])
        one = max(0, int(free // kv_bytes_per_token(x["cfg"], x["dtype"])))
        per.append({"model": x["model"], "dtype": x["dtype"],
                    "max_context_one_wafer": one,
                    "wafers_for_claim": int(max(1, -(-need // cap))),
                    "model_max_position_embeddings": x["cfg"].max_position_embeddings})
    ok = [p for p in per if p["max_context_one_wafer"] >= c.value]
    kv_only = min(kv_bytes_per_token(x["cfg"], x["dtype"]) for x in rows) * c.value
    if ok:
        verdict = "consistent" if len(ok) == len(per) else \
            f"consistent for {', '.join(p['model'] + ' ' + p['dtype'] for p in ok)} only"
        why = (f"one wafer's {cap / 1e9:.1f} GB of usable SRAM holds the weights and a "
               f"{c.value:,.0f}-token KV cache for those; the others need "
               f"{max(p['wafers_for_claim'] for p in per)} wafers")
    elif kv_only > cap:
        verdict, why = "physically impossible", "the KV cache alone exceeds one wafer's SRAM"
    else:
        worst = max(p["wafers_for_claim"] for p in per)
        verdict = f"optimistic: needs up to {worst} wafers"
        why = "no model considered holds weights and KV cache on one wafer"
    return {"claim": c.text, "baseline": c.baseline, "verdict": verdict, "reason": why,
            "per_model": per}


def _power(c, rows, hw):
    decode_claim = 21_000.0
    per = _per_model(rows, lambda x: {
        "j_per_token": x["report"]["energy"]["per_token_j"],
        "dynamic_w_at_model_rate": x["report"]["energy"]["power_w_single_user"],
        "dynamic_w_at_21000_tps": x["report"]["energy"]["per_token_j"] * decode_claim
        / x["report"]["fit"]["wafers"]})
    vendor = hw.system_power_w
    floor = min(p["dynamic_w_at_21000_tps"] for p in per)
    if floor > c.value:
        verdict = "physically impossible"
        why = (f"with 21,000 tokens/s (the article's own figure) the dynamic energy of the MACs "
               f"and SRAM reads alone needs {floor:,.0f} W per wafer or more (smallest model); "
               f"the vendor's system draws {vendor:,.0f} W")
    elif vendor:
        verdict = f"optimistic by {_ratio(vendor / c.value)}"
        why = (f"the vendor's CS-3 system power is {vendor:,.0f} W (PE peak "
               f"{hw.pe_peak_power_w * 1e3:.0f} mW x {hw.cores:,} PEs = "
               f"{hw.pe_peak_power_w * hw.cores:,.0f} W); the dynamic floor at 21,000 tokens/s "
               f"is {floor:,.0f} W, so 42 W is not excluded by energy per operation alone, but "
               "leakage and clocking of 4 T transistors are not in that floor")
    else:
        verdict, why = "not checked", "the preset has no system power"
    return {"claim": c.text, "baseline": c.baseline, "verdict": verdict, "reason": why,
            "per_model": per}


def _project(c, rows, hw):
    tokens = c.value * CODE_BYTES_PER_LINE / CODE_BYTES_PER_TOKEN
    cap = hw.pes * hw.sram_usable_per_pe
    per = []
    for x in rows:
        kv = kv_bytes_per_token(x["cfg"], x["dtype"]) * tokens
        need = weight_bytes(x["cfg"], x["dtype"]) + kv
        per.append({"model": x["model"], "dtype": x["dtype"], "tokens": tokens,
                    "kv_bytes": kv, "wafers_needed": int(-(-need // cap)),
                    "model_max_position_embeddings": x["cfg"].max_position_embeddings})
    ctx_claim = 256_000
    least = min(p["wafers_needed"] for p in per)
    verdict = (f"inconsistent with the article's own 256k context (needs "
               f"{_ratio(tokens / ctx_claim)}); physically impossible on one chip"
               if least > 1 else f"optimistic by {_ratio(tokens / ctx_claim)} against its "
               "256k context")
    why = (f"200,000 lines x {CODE_BYTES_PER_LINE} B/line (measured, CPython stdlib) / "
           f"{CODE_BYTES_PER_TOKEN} B/token (assumed) = {tokens / 1e6:.2f} M tokens; the KV "
           f"cache needs {min(p['kv_bytes'] for p in per) / 1e9:.0f}-"
           f"{max(p['kv_bytes'] for p in per) / 1e9:.0f} GB, {least}-"
           f"{max(p['wafers_needed'] for p in per)} wafers of SRAM; every model considered "
           f"has max_position_embeddings <= "
           f"{max(p['model_max_position_embeddings'] for p in per):,}")
    return {"claim": c.text, "baseline": c.baseline, "verdict": verdict, "reason": why,
            "per_model": per}


_CHECKS = {"ttft": _ttft, "decode": _decode, "context": _context, "power": _power,
           "project": _project}
