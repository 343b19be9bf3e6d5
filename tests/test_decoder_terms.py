"""The on-fabric decoder's per-op terms for the wafer estimate (``scripts/perf/
decoder_terms.py``): the fit on synthetic and recorded measurements, the calibration file's
versions, the estimate's use of the terms, and one small real measurement (the RTL against the
mesh ISS, then decodes on the ISS)."""

import json

import numpy as np
import pytest
from sparktile.scripts.perf.calibration import (
    CalibrationError,
    load_calibration,
    load_decoder_terms,
    save_calibration,
    shipped_calibration,
)
from sparktile.scripts.perf.decoder_terms import (
    DECODER_OPS,
    FIT_MODELS,
    TERMS,
    DecoderTermsError,
    check_against_rtl,
    fit_decoder_terms,
    measure_decodes,
    predict_op,
)
from sparktile.scripts.perf.estimate import estimate
from sparktile.scripts.perf.hardware import load_hardware
from sparktile.scripts.perf.models import load_model_config


def _synthetic(truth: dict, seed: int = 3) -> list[dict]:
    """Run records of random sizes whose op cycles are exactly ``truth``'s prediction."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(40):
        r = {"mesh": "synthetic", "kv_depth": int(rng.integers(2, 15)),
             "channel_depth": int(rng.integers(2, 15)),
             # one slot a worker often: the weighted sum's digits run only with more
             "slots": int(rng.choice([1, int(rng.integers(2, 40))], p=[0.3, 0.7])),
             "heads": int(rng.choice([1, 2, 4, 8])), "kv_heads": int(rng.choice([1, 2])),
             "head_dim": int(rng.choice([8, 16, 32])), "hidden": int(rng.choice([32, 64, 128])),
             "channels": int(rng.choice([4, 8, 12, 16])), "layers": int(rng.integers(1, 4)),
             "intermediate": int(rng.choice([32, 64, 256])),
             # the hub takes the attention's sums on one stream or two
             "kv_two_streams": bool(rng.integers(2))}
        r["by_op"] = {op: predict_op(truth, op, r) for op in DECODER_OPS}
        runs.append(r)
    return runs


def _truth():
    rng = np.random.default_rng(7)
    return {op: {t: float(rng.uniform(0.5, 300)) for t in TERMS[op]} for op in DECODER_OPS}


def test_fit_recovers_known_terms_from_synthetic_runs():
    truth = _truth()
    terms, rep = fit_decoder_terms(_synthetic(truth))
    for op in DECODER_OPS:
        for t in TERMS[op]:
            assert terms[op][t] == pytest.approx(truth[op][t], rel=1e-6), (op, t)
        assert rep[op]["max_abs_error_pct"] < 1e-6


def test_fit_says_which_terms_it_cannot_determine():
    runs = [dict(r, kv_depth=3, channel_depth=3, heads=2)        # one depth, one head count
            for r in _synthetic(_truth())]
    with pytest.raises(DecoderTermsError, match="determine only"):
        fit_decoder_terms(runs)


def test_shipped_terms_refit_from_their_recorded_decodes_and_predict_the_held_out_one():
    data = json.loads(shipped_calibration().read_text())
    dec = data["decoder"]
    assert data["version"] == 2
    terms, _ = fit_decoder_terms(dec["runs"])
    for op in DECODER_OPS:
        for t in TERMS[op]:
            assert terms[op][t] == pytest.approx(dec["terms"][op][t], rel=1e-9, abs=1e-9)
    # the RTL check the calibration ran: the mesh ISS equal to the RTL counter within 2 %
    assert dec["rtl_check"] and all(c["max_abs_error_pct"] <= 2.0 for c in dec["rtl_check"])
    # the shipped model on the 8x8 (not in the fit): each op within 15 % of the measured
    for op, v in dec["heldout"]["ops"].items():
        assert abs(v["error_pct"]) < 15.0, (op, v)
    loaded, origin = load_decoder_terms(shipped_calibration())
    assert loaded == dec["terms"] and "calibration.json" in origin


def test_a_version_1_file_still_loads_with_the_shipped_decoder_terms(tmp_path):
    old = json.loads(shipped_calibration().read_text())
    old = {k: v for k, v in old.items() if k != "decoder"}
    path = tmp_path / "old.json"
    save_calibration(path, old)
    assert json.loads(path.read_text())["version"] == 1
    timing, origin = load_calibration(path)
    assert origin == str(path) and timing.p_hop > 0
    terms, note = load_decoder_terms(path)
    assert terms == json.loads(shipped_calibration().read_text())["decoder"]["terms"]
    assert "no decoder terms" in note and "rerun sparktile calibrate" in note
    bad = tmp_path / "bad.json"
    save_calibration(bad, {**old, "decoder": {"terms": {"softmax": {}}}})
    with pytest.raises(CalibrationError, match="decoder terms are unreadable"):
        load_decoder_terms(bad)


def test_calibrated_decode_time_grows_with_context():
    """With the decoder's terms, attention (and so a token) costs more per position of context
    once the KV cache takes more than one slot a PE; the analytic model is kept without them."""
    terms, _ = load_decoder_terms(shipped_calibration())
    timing, _ = load_calibration(shipped_calibration())
    hw = load_hardware("wse3")
    cfg, _ = load_model_config("llama-3.1-8b")
    t = {}
    for ctx in (1024, 65536, 131072):
        r = estimate(cfg, hw, "int8", context=ctx, prompt_tokens=256, timing=timing,
                     wafers=1, decoder=terms)
        assert r["decoder_terms"] == "calibrated"
        assert any("on-fabric decoder" in a for a in r["assumptions"])
        t[ctx] = r["decode"]["time_per_token_s"]
    assert t[1024] < t[65536] < t[131072]
    analytic = estimate(cfg, hw, "int8", context=1024, prompt_tokens=256, timing=timing,
                        wafers=1)
    assert analytic["decoder_terms"] == "analytic"
    assert not any("on-fabric decoder" in a for a in analytic["assumptions"])


def test_one_small_real_measurement_checks_the_iss_against_the_rtl_and_fits():
    checked = check_against_rtl(checks=(((2, 2), 0, 4),))
    assert checked[0]["max_abs_error_pct"] <= 2.0
    assert len(checked[0]["rtl_cycles"]) == len(checked[0]["iss_cycles"]) == 3
    models = FIT_MODELS[:4] + FIT_MODELS[5:]      # heads, head sizes, hidden, intermediate
    runs = measure_decodes(meshes=((2, 2), (2, 3), (3, 3), (1, 8)), models=models,
                           contexts=(4, 8, 16))
    assert {r["mesh"] for r in runs} == {"2x2", "2x3", "3x3", "1x8"}
    terms, rep = fit_decoder_terms(runs)
    # more slots a worker cost more in every attention op
    assert all(terms[op]["per_head_slot"] + terms[op].get("per_head_slot_word", 0) > 0
               for op in ("attention_scores", "softmax"))
    # the linear form explains every op: rms residual under 10 % (the largest single ones,
    # up to about 20 %, are on the 2x2 mesh)
    assert all(rep[op]["rms_error_pct"] < 10 for op in DECODER_OPS), rep
    # each instruction of a worker's reduction over its slots costs cycles
    assert terms["softmax"]["per_slot_reduction_op"] > 0


@pytest.mark.parametrize("seed", range(5))
def test_the_fit_keeps_every_term_a_cost(seed):
    """The non-negative least squares: on random problems its answer is >= 0 and optimal
    (Karush-Kuhn-Tucker: no free coefficient's gradient points into the feasible side), and
    equals the plain least squares where that is already non-negative."""
    from sparktile.scripts.perf.decoder_terms import _nonnegative_lstsq
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 10, (40, 5))
    a[:, 1] = a[:, 0] * 0.9 + rng.normal(0, 0.3, 40)    # two correlated quantities
    y = a @ np.array([3.0, -1.0, 2.0, 0.5, 0.0]) + rng.normal(0, 1.0, 40)
    x = _nonnegative_lstsq(a, y)
    assert (x >= 0).all() and x[1] == 0
    grad = a.T @ (a @ x - y)
    assert np.all(grad[x > 0] == pytest.approx(0, abs=1e-6 * np.abs(a.T @ y).max()))
    assert (grad[x == 0] >= -1e-6 * np.abs(a.T @ y).max()).all()
    y_pos = a @ np.array([3.0, 1.0, 2.0, 0.5, 4.0])
    assert _nonnegative_lstsq(a, y_pos) == pytest.approx([3.0, 1.0, 2.0, 0.5, 4.0], rel=1e-9)


@pytest.mark.parametrize("rows,cols", [(1, 8), (3, 1), (2, 3), (5, 4), (8, 8), (16, 16)])
def test_prefix_depth_is_the_farthest_of_the_nearest_workers(rows, cols):
    """``prefix_depth`` against the decoder's own worker order (by row + col) on every count."""
    from sparktile.scripts.perf.decoder_terms import prefix_depth

    from sparktile.compiler.decoder_mapping import worker_order
    workers = worker_order(rows, cols)
    for n in range(1, len(workers) + 1):
        assert prefix_depth(rows, cols, n) == max(r + c for r, c in workers[:n]), n
    assert prefix_depth(rows, cols, 10 * len(workers)) == rows + cols - 2


@pytest.mark.parametrize("rows,cols", [(1, 8), (3, 1), (2, 3), (5, 4), (8, 2), (8, 8),
                                       (16, 16)])
def test_summed_depth_is_the_farthest_of_the_summed_workers(rows, cols):
    """``summed_depth`` against the decoder's own choice of the KV workers on every count."""
    from sparktile.scripts.perf.decoder_terms import summed_depth

    from sparktile.compiler.decoder_mapping import summed_workers
    for n in range(1, rows * cols):
        assert summed_depth(rows, cols, n) == max(r + c for r, c in
                                                  summed_workers(rows, cols, n)), n


def test_summed_streams_follows_where_the_compiler_puts_a_summed_exchange():
    """The wafer estimate's one-or-two streams at the root (``summed_streams``) is the
    compiler's placement (``summed_workers``): one where the workers fit the hub's east
    subtree (or the mesh is one row or one column), two where column 0 holds some too."""
    from sparktile.scripts.perf.decoder_terms import summed_streams

    from sparktile.compiler.decoder_mapping import summed_workers
    seen = set()
    for rows in range(1, 7):
        for cols in range(1, 7):
            for n in range(1, rows * cols):
                kids = {min(c, 1) for _r, c in summed_workers(rows, cols, n)}
                assert summed_streams(rows, cols, n) == len(kids), (rows, cols, n)
                seen.add(len(kids))
    assert seen == {1, 2}


@pytest.mark.parametrize("rows,cols", [(3, 3), (2, 2), (2, 4), (4, 2)])
def test_kv_placement_is_the_compilers(rows, cols):
    """The wafer estimate's KV placement (``kv_placement``: slots a worker and workers) is what
    ``compile_decoder`` chooses for the same context, one slot more where that keeps the
    hub's sums on one stream included (every context the mesh holds, a small model)."""
    from sparktile.cosim.benches.decode import decode_model
    from sparktile.hdl.mesh import MeshShape
    from sparktile.scripts.perf.decoder_terms import kv_placement

    from sparktile.compiler.decoder_mapping import compile_decoder
    model = decode_model(random=dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                                     head_dim=8, intermediate_size=32, vocab_size=32, seed=3))
    shape = MeshShape(rows, cols, pe="core", sram_kb=32)
    workers = rows * cols - 1
    bumped = 0
    for ctx in range(1, 13 * workers, max(1, workers // 2)):
        m = compile_decoder(model, shape, context=ctx)
        want = kv_placement(rows, cols, ctx, -(-ctx // workers))
        assert (m.slots, m.kv_workers) == want, (ctx, m.slots, m.kv_workers, want)
        bumped += m.slots > -(-ctx // workers)
    assert bumped        # some contexts of each mesh take the extra slot
