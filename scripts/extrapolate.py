"""``sparktile calibrate`` and ``sparktile extrapolate``: from RTL cycles to a whole wafer.

``calibrate`` runs GEMVs on several mesh sizes in Verilator, fits the cycle model's free
parameters (:func:`~sparktile.scripts.perf.calibration.fit_timing`), checks the fit on meshes
and shapes it was not fitted on; it also fits the on-fabric decoder's per-op terms (attention
scores, softmax, weighted sum, norm: :mod:`~sparktile.scripts.perf.decoder_terms`) to decodes
of the mesh ISS after checking the ISS's cycles against the RTL's counter; it stores the result
(default
``~/.cache/sparktile/calibration.json``, which ``extrapolate`` then reads; without it,
``extrapolate`` uses the shipped ``scripts/perf/data/calibration.json``).

``extrapolate`` reports, for a model on a hardware description (:mod:`.wafer`), whether it
fits, decode speed, time to first token, the largest context, energy and power, and what bounds
decode; ``--claims seed-article`` checks an article's claims instead.
"""

from __future__ import annotations

import click

from sparktile.errors import UserError

from ..cosim.cli import SEED
from ..report import check_output, save_json
from .perf.calibration import (
    CalibrationError,
    default_calibration_path,
    load_calibration,
    load_decoder_terms,
    run_calibration,
    save_calibration,
)
from .perf.estimate import estimate
from .perf.hardware import PRESETS, HardwareError, load_hardware
from .perf.models import DTYPES, MODELS, ModelError, load_model_config
from .perf.placement import PlacementError

__all__ = ["calibrate_command", "extrapolate_command"]

@click.command("calibrate")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the calibration [default: ~/.cache/sparktile/"
                   "calibration.json, read by extrapolate].")
@click.option("--seed", type=SEED, default=1, show_default=True)
@click.option("--part", type=click.Choice(["all", "gemv", "decoder"]), default="all",
              show_default=True,
              help="What to measure: the GEMV timing, the on-fabric decoder's per-op terms, "
                   "or both. With 'decoder', the GEMV part is kept from the file at --out "
                   "(or the one extrapolate reads).")
def calibrate_command(out, seed, part):
    """Fit the cycle model's overheads and hop latencies to RTL GEMVs on several meshes, and
    the on-fabric decoder's attention, softmax and norm terms to decodes (the mesh ISS,
    checked against the RTL's counter)."""
    from pathlib import Path
    # The output is checked before the minutes of RTL runs, not after them.
    path = str(check_output(out, "--out")) if out else str(default_calibration_path())
    if part != "decoder":
        click.echo("measuring GEMVs on the RTL (fit: 1x1, 2x2, 2x3; held out: 3x2, 4x4)")
    if part != "gemv":
        click.echo("measuring the on-fabric decoder: the RTL against the mesh ISS on 2x2, 2x3, "
                   "3x1, then decodes on 8 meshes (the mesh ISS), held out: the shipped model "
                   "on 8x8")
    try:
        base = path if part == "decoder" and Path(path).is_file() else None
        rec = run_calibration(seed=seed, echo=click.echo, part=part, base=base)
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from None
    save_calibration(path, rec)
    if part != "decoder":
        t = rec["timing"]
        click.echo("fitted: " + ", ".join(f"{k} {v:.3f}" for k, v in t.items()))
        click.echo(f"fit residuals: max {rec['fit']['max_abs_error_pct']:.3f} % over "
                   f"{len(rec['fit']['runs'])} runs")
        for h in rec["heldout"]:
            click.echo(f"  held out {h['mesh']} {h['m']}x{h['n']} batch {h['batch']}: RTL "
                       f"{h['cycles']}, model {h['predicted']:.0f} ({h['error_pct']:+.2f} %)")
        click.echo(f"held-out max error {rec['heldout_max_abs_error_pct']:.3f} %")
    if part != "gemv":
        dec = rec["decoder"]
        for op, terms in dec["terms"].items():
            f = dec["fit"][op]
            click.echo(f"decoder {op}: " + ", ".join(f"{k} {v:.2f}" for k, v in terms.items())
                       + f" cycles (fit over {f['runs']} decodes: max {f['max_abs_error_pct']:.1f}"
                         f" %, rms {f['rms_error_pct']:.1f} %)")
    click.echo(f"wrote {path}")


def _fail(msg: str):
    raise UserError(msg)


def _si(v: float, unit: str) -> str:
    for k, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= k:
            return f"{v / k:.3g} {p}{unit}"
    if abs(v) < 1e-3 and v:
        return f"{v * 1e6:.3g} u{unit}"
    if abs(v) < 1 and v:
        return f"{v * 1e3:.3g} m{unit}"
    return f"{v:.3g} {unit}"


def _print_report(r: dict, hw, cal_origin: str, model_src: str) -> None:
    f, d, p, e = r["fit"], r["decode"], r["prefill"], r["energy"]
    echo = click.echo
    echo(f"{r['model']} ({r['params'] / 1e9:.2f} B parameters, {model_src}) at {r['dtype']} on "
         f"{hw.name}, context {r['context']:,}, prompt {r['prompt_tokens']:,}, reduction "
         f"{r['reduce']}; calibration: {cal_origin}")
    echo(f"  fit: weights {_si(f['weights_bytes'], 'B')}, KV cache {_si(f['kv_bytes'], 'B')} "
         f"({f['kv_bytes_per_token']:,} B/token); usable SRAM "
         f"{_si(f['sram_usable_bytes_per_wafer'], 'B')} per wafer -> needs "
         f"{f['wafers_needed']} wafer(s); using {f['wafers']}: "
         f"{'fits' if f['fits'] else 'DOES NOT FIT (figures below on the wafers needed)'}")
    echo(f"  largest context that fits: {f['max_context']:,} tokens (model's own limit "
         f"{f['model_max_position_embeddings']:,})")
    echo(f"  decode: {d['tokens_per_s_per_user']:,.0f} tokens/s per user "
         f"({d['time_per_token_s'] * 1e6:.1f} us/token); bound by {d['bound']}")
    echo("    where the time goes: " + ", ".join(
        f"{k} {v * 1e6:.1f} us ({100 * v / d['time_per_token_s']:.0f} %)"
        for k, v in d["breakdown_s"].items()))
    echo(f"    many users pipelined: {d['aggregate_tokens_per_s']:,.0f} tokens/s aggregate; "
         f"roofline (every PE busy, no latency): {d['roofline_tokens_per_s']:,.0f} tokens/s")
    echo(f"  time to first token: {p['ttft_s'] * 1e3:.2f} ms (one token's latency "
         f"{p['first_token_latency_s'] * 1e6:.0f} us + pipeline, slowest stage "
         f"{p['slowest_stage']})")
    echo(f"  energy: {e['per_token_j'] * 1e3:.2f} mJ/token (MAC {e['mac_j'] * 1e3:.2f}, SRAM "
         f"{e['sram_j'] * 1e3:.2f}, fabric {e['fabric_j'] * 1e3:.2f}, off-wafer "
         f"{e['offwafer_j'] * 1e3:.3f}); dynamic power {e['power_w_single_user']:,.1f} W at one "
         f"user, {e['power_w_aggregate']:,.0f} W pipelined")
    if e["vendor_system_power_w"]:
        echo(f"    vendor system power {e['vendor_system_power_w']:,.0f} W for "
             f"{f['wafers']} system(s): {e['vendor_j_per_token_single_user']:.2f} J/token at "
             "one user")
    echo("  assumptions:")
    for a in r["assumptions"]:
        echo(f"    - {a}")
    echo("  hardware (value, source):")
    for k, v in r["hardware_description"].items():
        echo(f"    {k} = {v['value']} {v['unit']}  [{v['source']}]")


def _print_claims(res: dict) -> None:
    click.echo(f"claims '{res['claims']}' on {res['hardware']} (one wafer = one chip), "
               f"context {res['context']:,}, prompt {res['prompt_tokens']:,}; models: "
               + "; ".join(res["models"]))
    for c in res["results"]:
        click.echo(f"* {c['claim']}" + (f" (vs {c['baseline']})" if c["baseline"] else ""))
        click.echo(f"  verdict: {c['verdict']}")
        click.echo(f"  why: {c['reason']}")
        for p in c["per_model"]:
            vals = ", ".join(f"{k} {_fmt(v)}" for k, v in p.items() if k not in ("model", "dtype"))
            click.echo(f"    {p['model']} {p['dtype']}: {vals}")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@click.command("extrapolate")
@click.option("--wafer", "wafer", default="wse3", show_default=True,
              help=f"Hardware preset: {', '.join(PRESETS)}.")
@click.option("--hw-file", type=click.Path(dir_okay=False), default=None,
              help="TOML file overriding hardware fields ([hardware] table; may set preset).")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Override one hardware field (repeatable), e.g. --set clock_hz=8.5e8.")
@click.option("--model", default="llama-3.1-8b", show_default=True,
              help=f"Model preset ({', '.join(MODELS)}) or a Hugging Face config.json path.")
@click.option("--dtype", default="fp16", show_default=True,
              help=f"Weight and KV data type: {', '.join(DTYPES)}.")
@click.option("--context", type=click.IntRange(0, 1 << 24), default=4096, show_default=True)
@click.option("--prompt-tokens", type=click.IntRange(1, 1 << 24), default=1024,
              show_default=True)
@click.option("--wafers", type=click.IntRange(1, 256), default=None,
              help="Number of wafers [default: as many as needed].")
@click.option("--reduce", type=click.Choice(["chain", "tree"]), default="chain",
              show_default=True, help="Reduction along region rows: the RTL's chain, or a "
                                      "tree (what-if).")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibration file [default: ~/.cache/sparktile/calibration.json if present, "
                   "else the shipped one].")
@click.option("--claims", type=click.Choice(["seed-article"]), default=None,
              help="Check a set of published claims instead of one model.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write the plots (PNG; needs the 'plot' extra: matplotlib).")
def extrapolate_command(wafer, hw_file, sets, model, dtype, context, prompt_tokens, wafers,
                        reduce, calibration, claims, json_path, plot_path):
    """Extrapolate measured tile cycles to a whole wafer, with every assumption listed."""
    if dtype not in DTYPES:
        _fail(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if json_path:
        json_path = check_output(json_path, "--json")
    if plot_path:
        from .perf.plots import check_plotting
        plot_path = check_output(plot_path, "--plot")
        check_plotting()
    explicit = click.get_current_context().get_parameter_source("prompt_tokens")
    if (context and prompt_tokens and prompt_tokens > context
            and explicit is not click.core.ParameterSource.DEFAULT):
        _fail(f"--prompt-tokens {prompt_tokens} is longer than --context {context}; allowed: "
              f"1 <= prompt tokens <= context")
    try:
        hw = load_hardware(wafer, toml_path=hw_file, sets=sets)
    except HardwareError as exc:
        _fail(str(exc))
    try:
        timing, cal_origin = load_calibration(calibration)
        decoder, dec_origin = load_decoder_terms(calibration)
    except CalibrationError as exc:
        _fail(str(exc))
    if dec_origin != cal_origin:
        cal_origin += f"; decoder terms: {dec_origin}"
    if claims:
        from .perf.claims import check_claims
        try:
            res = check_claims(claims, hw, timing, context=context, prompt_tokens=prompt_tokens,
                               reduce=reduce, decoder=decoder)
        except (PlacementError, ValueError) as exc:
            _fail(str(exc))
        res["calibration"] = cal_origin
        res["hardware_description"] = hw.as_dict()
        _print_claims(res)
        if json_path:
            save_json(json_path, res)
        return
    try:
        cfg, model_src = load_model_config(model)
    except ModelError as exc:
        _fail(str(exc))
    try:
        r = estimate(cfg, hw, dtype, context=context, prompt_tokens=prompt_tokens, timing=timing,
                     wafers=wafers, reduce=reduce, decoder=decoder)
    except (PlacementError, ValueError) as exc:
        _fail(str(exc))
    r["model_source"] = model_src
    r["calibration"] = {"source": cal_origin, "timing": timing.as_dict(), "decoder": decoder}
    r["hardware_description"] = hw.as_dict()
    _print_report(r, hw, cal_origin, model_src)
    if json_path:
        save_json(json_path, r)
        click.echo(f"wrote {json_path}")
    if plot_path:
        from .perf.plots import plot_report
        plot_report(plot_path, cfg, hw, dtype, context, prompt_tokens, timing, reduce,
                    hw_file=hw_file, sets=sets, decoder=decoder)
        click.echo(f"wrote {plot_path}")

