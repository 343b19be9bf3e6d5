"""Wafer-scale extrapolation (issue 6): presets, overrides, calibration fit, report, claims,
and one-line errors. Pure Python; the RTL calibration check is in test_extrapolate_rtl.py."""

import json

import pytest
from click.testing import CliRunner
from sparktile.scripts.perf.calibration import (
    FIT_CASES,
    HELDOUT_CASES,
    CalibrationError,
    fit_timing,
    load_calibration,
    predict_cycles,
    shipped_calibration,
)
from sparktile.scripts.perf.gemv_time import CATEGORIES, gemv_breakdown
from sparktile.scripts.perf.hardware import FIELDS, PRESETS, HardwareError, load_hardware

from sparktile.cli import main
from sparktile.compiler.cycle_model import GemvTiming, gemv_cycles


def _cli(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_load_and_every_constant_has_a_source(preset):
    hw = load_hardware(preset)
    d = hw.as_dict()
    assert set(d) == set(FIELDS)
    for key, v in d.items():
        assert isinstance(v["source"], str) and len(v["source"]) > 5, key
    if preset.startswith("wse"):
        # Where sources disagree the preset says which it took.
        assert "850 MHz" in hw.sources["clock_hz"]
        assert "[3P]" in hw.sources["lanes_fp16"]


def test_tile_preset_reads_the_rtl_parameters():
    from sparktile.golden_model.arith import LANES
    from sparktile.hdl.mesh import MeshShape
    hw = load_hardware("tile")
    assert hw.lanes_int8 == LANES == 4
    assert hw.sram_bytes_per_pe == MeshShape(1, 1).sram_words * 4
    assert hw.acc_depth == MeshShape(1, 1).acc_depth
    assert hw.lanes_fp16 == 0


def test_override_from_set_and_toml(tmp_path):
    hw = load_hardware("wse3", sets=["clock_hz=8.5e8", "lanes_fp16=4"])
    assert hw.clock_hz == 8.5e8 and hw.lanes_fp16 == 4
    assert "overridden" in hw.sources["clock_hz"]
    f = tmp_path / "hw.toml"
    f.write_text('[hardware]\npreset = "wse2"\nclock_hz = 850e6\n')
    hw = load_hardware("wse3", toml_path=f)
    assert hw.name == "wse2" and hw.clock_hz == 850e6
    base = _cli("extrapolate", "--model", "llama-3.1-8b", "--json", str(tmp_path / "a.json"))
    slow = _cli("extrapolate", "--model", "llama-3.1-8b", "--set", "clock_hz=5.5e8",
                "--json", str(tmp_path / "b.json"))
    assert base.exit_code == 0 and slow.exit_code == 0, slow.output
    a = json.loads((tmp_path / "a.json").read_text())["decode"]["tokens_per_s_per_user"]
    b = json.loads((tmp_path / "b.json").read_text())["decode"]["tokens_per_s_per_user"]
    assert b < a * 0.6  # half the clock, minus the fixed wafer-crossing terms


def _synthetic(timing):
    runs = []
    for (r, c), items in {**FIT_CASES, **HELDOUT_CASES}.items():
        for it in items:
            run = {"mesh": f"{r}x{c}", **it}
            run["cycles"] = gemv_cycles(it["m"], it["n"], it["batch"], r, c, timing=timing)
            runs.append(run)
    return runs


def test_fit_recovers_known_parameters_from_synthetic_data():
    truth = GemvTiming(fill=5.0, desc=7.0, x_hop=2.0, vec=1.5, p_hop=6.0, drain=5.0)
    timing, rep = fit_timing(_synthetic(truth))
    for k, v in truth.as_dict().items():
        assert getattr(timing, k) == pytest.approx(v, abs=1e-6), k
    assert rep["max_abs_error_pct"] < 1e-6 and rep["rank"] == 5


def test_fit_says_which_parameters_it_cannot_determine():
    runs = [r for r in _synthetic(GemvTiming()) if r["mesh"] == "1x1"] * 3
    with pytest.raises(CalibrationError, match="determine only"):
        fit_timing(runs)


def test_shipped_calibration_predicts_held_out_cases():
    timing, origin = load_calibration(shipped_calibration())
    data = json.loads(shipped_calibration().read_text())
    for h in data["heldout"]:
        assert abs(predict_cycles(h, timing) - h["cycles"]) / h["cycles"] < 0.05


@pytest.mark.parametrize("m,n,r,c,b", [(300, 40, 1, 1, 2), (64, 200, 4, 4, 3), (7, 13, 2, 3, 1)])
def test_wafer_gemv_breakdown_is_the_pe_cycle_model_on_the_tile(m, n, r, c, b):
    hw = load_hardware("tile")
    parts = gemv_breakdown(m, n, r, c, hw, "int8", GemvTiming(), batch=b)
    assert set(parts) == set(CATEGORIES)
    assert sum(parts.values()) == gemv_cycles(m, n, b, r, c)


def test_extrapolate_json_has_the_fields(tmp_path):
    out = tmp_path / "r.json"
    res = _cli("extrapolate", "--wafer", "wse3", "--model", "llama-3.1-8b", "--dtype", "fp16",
               "--context", "4096", "--prompt-tokens", "1024", "--json", str(out))
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["fit"]["fits"] and r["fit"]["wafers_needed"] >= 1
    assert r["fit"]["max_context"] > 4096
    assert r["decode"]["tokens_per_s_per_user"] > 0
    assert r["decode"]["bound"] in CATEGORIES
    assert set(r["decode"]["breakdown_s"]) == set(CATEGORIES)
    assert r["prefill"]["ttft_s"] > 0
    assert r["energy"]["per_token_j"] > 0 and r["energy"]["power_w_single_user"] > 0
    assert len(r["assumptions"]) >= 10
    assert all(v["source"] for v in r["hardware_description"].values())
    assert r["calibration"]["timing"]["p_hop"] > 0
    # More wafers than needed: same model, more PEs, not slower.
    out2 = tmp_path / "r2.json"
    assert _cli("extrapolate", "--wafers", "2", "--json", str(out2)).exit_code == 0
    r2 = json.loads(out2.read_text())
    assert r2["decode"]["time_per_token_s"] < r["decode"]["time_per_token_s"] * 1.05


def test_shipped_model_on_the_tile_and_a_config_json(tmp_path):
    assert _cli("extrapolate", "--wafer", "tile", "--model", "sparktile-code-tiny",
                "--dtype", "int8", "--context", "256", "--prompt-tokens", "16").exit_code == 0
    cfg = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 256,
           "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    res = _cli("extrapolate", "--model", str(p), "--context", "128")
    assert res.exit_code == 0, res.output


def test_claims_check_gives_a_verdict_per_claim(tmp_path):
    out = tmp_path / "c.json"
    res = _cli("extrapolate", "--claims", "seed-article", "--json", str(out))
    assert res.exit_code == 0, res.output
    c = json.loads(out.read_text())
    assert len(c["results"]) == 5
    for r in c["results"]:
        assert r["verdict"] and r["reason"] and r["per_model"]
        assert any(w in r["verdict"] for w in ("consistent", "optimistic", "impossible"))
    assert res.output.count("verdict:") == 5


def test_plot_without_matplotlib_says_so(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    res = _cli("extrapolate", "--plot", str(tmp_path / "p.png"))
    assert res.exit_code == 2                       # a user error, found before the report
    assert "matplotlib" in res.output and "Traceback" not in res.output
    assert "tokens/s" not in res.output


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    p = tmp_path / "p.png"
    res = _cli("extrapolate", "--plot", str(p))
    assert res.exit_code == 0, res.output
    assert p.read_bytes()[:4] == b"\x89PNG"


def _bad_toml(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[hardware\nclock_hz = ")
    return str(p)


def _bad_config(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    return str(p)


def _bad_model_type(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "gpt2", "hidden_size": 8}))
    return str(p)


@pytest.mark.parametrize("args,expect", [
    (["--wafer", "wse9"], ["'wse9'", "tile, wse2, wse3"]),
    (["--model", "llama-9"], ["'llama-9'", "llama-3.1-8b"]),
    (["--dtype", "fp8"], ["'fp8'", "fp16, int8"]),
    (["--set", "clock=1"], ["'clock'", "clock_hz"]),
    (["--set", "clock_hz=fast"], ["'fast'", "clock_hz"]),
    (["--set", "lanes_fp16=2.5"], ["2.5", "integer"]),
    (["--set", "noequals"], ["'noequals'", "FIELD=VALUE"]),
    (["--wafer", "tile", "--dtype", "fp16"], ["lanes_fp16", "int8"]),
    (["--hw-file", "BAD_TOML"], ["not valid TOML"]),
    (["--model", "BAD_CONFIG"], ["config.json", "JSON"]),
    (["--model", "BAD_TYPE"], ["'gpt2'", "'llama' and 'qwen2'"]),
])
def test_bad_inputs_are_one_line_errors(tmp_path, args, expect):
    subst = {"BAD_TOML": _bad_toml, "BAD_CONFIG": _bad_config, "BAD_TYPE": _bad_model_type}
    args = [subst[a](tmp_path) if a in subst else a for a in args]
    res = _cli("extrapolate", *args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    err = [ln for ln in res.output.splitlines() if ln.lower().startswith("error:")]
    assert len(err) == 1, res.output
    for e in expect:
        assert e in err[0], err[0]


def test_hardware_errors_name_the_value():
    with pytest.raises(HardwareError, match="sram_reserve_bytes_per_pe"):
        load_hardware("wse3", sets=["sram_reserve_bytes_per_pe=999999"])


# issue 17: physically meaningless overrides are one clean error line (exit 2) naming the field,
# its value and the allowed range.
@pytest.mark.parametrize("args, needle", [
    (["--set", "clock_hz=inf"], "clock_hz = inf"),
    (["--set", "wafer_link_bytes_per_s=0", "--model", "llama-3.1-70b"], "wafer_link_bytes_per_s"),
    (["--set", "wafer_link_bytes_per_s=-1"], "wafer_link_bytes_per_s = -1"),
    (["--set", "e_mac_fp16_pj=-5"], "e_mac_fp16_pj = -5"),
    (["--set", "grid_rows=1e30"], "grid_rows"),
    (["--set", "clock_hz=nan"], "clock_hz = nan"),
    (["--prompt-tokens", "16777216", "--context", "16"], "--prompt-tokens 16777216"),
    (["--set", "nofield=1"], "allowed: name, cores"),
    (["--set", "clock_hz=abc"], "clock_hz must be a number"),
    (["--set", "clock_hz"], "FIELD=VALUE"),
])
def test_bad_override_is_one_error_line(args, needle):
    res = CliRunner().invoke(main, ["extrapolate", *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle in lines[0]
    if " = " in needle:
        assert "allowed" in lines[0]


def test_every_numeric_field_has_a_range():
    from sparktile.scripts.perf.hardware import RANGES
    assert set(RANGES) == {k for k, (kind, _u, _m) in FIELDS.items() if kind is not str}
    for name in PRESETS:
        load_hardware(name)  # every preset inside its ranges
