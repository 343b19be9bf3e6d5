"""System tier: the whole decoder on the Verilator mesh of programmable cores
(``cosim/benches/decode.py``): token in at the hub's north edge, next token out at its west
edge, every other op on the RTL, each position compared with the golden int path. The meshes
are those the core GEMV tests build (16 KiB per PE), so no extra Verilator build runs."""

import pytest
from sparktile.cosim.benches.decode import decode_run

#: Models small enough for the 16 KiB cores of the cached meshes (the code of a layer is
#: about 2,000 words a worker).
TINY = dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
            intermediate_size=32, vocab_size=32)
TWO_LAYERS = dict(TINY, num_layers=2, num_heads=1, seed=2)

CASES = [
    # rows, cols, model, prompt ids, new tokens
    (2, 2, dict(TINY, hidden_size=32, seed=1), [1, 7, 30], 3),          # GQA 2:1
    (2, 3, TWO_LAYERS, [3, 9], 5),
    (3, 1, dict(TINY, attention_bias=True, seed=3), [5, 2, 11], 3),      # one column, biases
]


@pytest.mark.parametrize("rows,cols,model,ids,n_new", CASES)
def test_decoder_on_rtl_matches_golden(run_bench, rows, cols, model, ids, n_new):
    r = run_bench(rows, cols, decode_run, {"ids": ids, "max_tokens": n_new, "random": model,
                                           "context": len(ids) + n_new - 1,
                                           "seed": model["seed"]},
                  seed=model["seed"],
                  pe="core")
    assert r.status == "complete", r.first_diff
    assert r.match_golden, f"first difference {r.first_diff}"
    assert r.tokens == r.golden and len(r.tokens) == len(ids) + n_new - 1
    assert r.task_errors == 0
    assert r.on_host == []
    # more positions than workers: the KV cache crossed PE boundaries on the RTL
    assert len(r.tokens) > rows * cols - 1
    assert all(c > 0 for c in r.token_cycles)


def test_a_wrong_token_is_reported_with_position_cycle_and_seed(run_bench):
    r = run_bench(2, 2, decode_run, {"ids": [1, 7], "max_tokens": 2, "random": dict(TINY, seed=1),
                                     "context": 4, "fault": "argmax_index", "seed": 9}, seed=9,
                  pe="core")
    assert not r.match_golden
    d = r.first_diff
    assert d["position"] == 0 and d["got"] != d["expected"] and d["seed"] == 9
    assert d["cycle"] > r.config_cycles


def test_every_op_matches_on_rtl(run_bench):
    """The hub's every intermediate vector (norms, q/k/v before and after RoPE, attention sums
    and outputs, o and down, the residual stream, the SiLU product, the logits) equals the
    golden trace at every position."""
    r = run_bench(2, 3, decode_run, {"ids": [4, 8], "max_tokens": 3, "random": TWO_LAYERS,
                                     "context": 4, "check": "every-op", "seed": 4},
                  seed=4, pe="core")
    assert r.match_golden, r.first_diff
    assert r.task_errors == 0


def test_a_flipped_kv_bit_is_named_by_the_every_op_check(run_bench):
    """Flip the sign bit of one int8 lane of position 1's key row in layer 1 after position 1
    ran: the first differing vector is layer 1's attention sum at position 2."""
    r = run_bench(2, 3, decode_run, {"ids": [4, 8, 15, 16], "max_tokens": 1, "random": TWO_LAYERS,
                                     "context": 4, "check": "every-op", "seed": 5,
                                     "fault": {"kv": [1, 1, 1, 7]}}, seed=5, pe="core")
    assert not r.match_golden
    d = r.first_diff
    assert (d["layer"], d["op"], d["position"], d["seed"]) == (1, "attn_sum", 2, 5), d
    assert d["got"] != d["expected"] and d["cycle"] > 0


def test_the_largest_context_fills_on_rtl(run_bench):
    """Every position the 2x2 mesh's KV cache holds (the workers' SRAM full), bit-exact."""
    from sparktile.cosim.benches.decode import decode_model
    from sparktile.hdl.mesh import MeshShape

    from sparktile.compiler.decoder_mapping import compile_decoder
    largest = compile_decoder(decode_model(random=TWO_LAYERS),
                              MeshShape(2, 2, pe="core")).max_context
    assert 2 < largest <= 40, largest            # a few slots a worker: cheap to fill
    r = run_bench(2, 2, decode_run, {"ids": [3], "max_tokens": largest, "random": TWO_LAYERS,
                                     "seed": 6}, seed=6, pe="core")
    assert r.match_golden, r.first_diff
    assert r.max_context == largest and len(r.tokens) == largest


def test_progress_comes_a_line_a_position_after_the_configurations():
    from sparktile.cosim.sim.session import run_job
    from sparktile.hdl.mesh import MeshShape
    lines = []
    r = run_job(MeshShape(2, 2, pe="core"), decode_run,
                {"ids": [1, 2], "max_tokens": 2, "random": dict(TINY, seed=1), "context": 3,
                 "progress_s": 0.0},
                seed=1, progress=lines.append)
    assert r.match_golden
    # The configuration reports as it goes (here after every slice): wavelets taken so far,
    # growing, of a fixed total, and the cycles; then one line a position.
    phases = [p["phase"] for p in lines]
    config = [p for p in lines if p["phase"] == "configure"]
    assert len(config) >= 2 and phases[:len(config)] == ["configure"] * len(config), phases
    lines = lines[len(config):]
    taken = [p["taken"] for p in config]
    assert taken == sorted(taken) and 0 < taken[-1] <= config[0]["wavelets"]
    assert len({p["wavelets"] for p in config}) == 1
    cycles = [p["cycles"] for p in config]
    assert cycles == sorted(cycles) and cycles[-1] < r.config_cycles
    assert [p["i"] for p in lines] == [1, 2, 3] and {p["n"] for p in lines} == {3}
    assert [p["token"] for p in lines] == r.tokens == [p["golden"] for p in lines]
    assert [p["phase"] for p in lines] == ["prompt", "new", "new"]


def test_sampled_generation_on_rtl_matches_golden_generate(run_bench):
    """Sampling: the RTL hub sends every position's logits (each compared element by element
    with the golden int path), the host draws from them, and the tokens are those of the
    golden model's ``generate(mode="int", seed=...)``; sampling is the host's only op."""
    from sparktile.cosim.benches.decode import decode_model
    ids, n_new, seed = [3, 9], 4, 21
    sampling = {"temperature": 0.9, "top_k": 12, "top_p": 0.9}
    r = run_bench(2, 3, decode_run, {"ids": ids, "max_tokens": n_new, "random": TWO_LAYERS,
                                     "context": len(ids) + n_new, "seed": seed, **sampling},
                  seed=seed, pe="core")
    assert r.match_golden, r.first_diff
    assert r.on_host == ["sampling"] and "argmax" not in r.on_fabric
    gen = decode_model(random=TWO_LAYERS).generate(ids, n_new, mode="int", seed=seed,
                                                   stop_at_eos=False, **sampling)
    assert r.tokens[len(ids) - 1:] == gen.token_ids


def test_a_precompiled_mapping_runs_as_the_job_would_compile_it(tmp_path):
    """The CLI compiles the mapping once and hands it to the job (``mapping_file``): same
    tokens, same cycles as the job compiling it itself; the recorded workload's cycles are
    the simulation's."""
    import pickle

    from sparktile.cosim.benches.decode import decode_model
    from sparktile.cosim.sim.session import run_job
    from sparktile.hdl.mesh import MeshShape

    from sparktile.compiler.decoder_mapping import compile_decoder
    shape, model = MeshShape(2, 2, pe="core"), dict(TINY, seed=1)
    args = {"ids": [1, 2], "max_tokens": 2, "random": model, "context": 3}
    path = tmp_path / "mapping.pkl"
    path.write_bytes(pickle.dumps(compile_decoder(decode_model(random=model), shape, 3)))
    own = run_job(shape, decode_run, args, seed=1)
    given = run_job(shape, decode_run, {**args, "mapping_file": str(path),
                                        "record": str(tmp_path / "replay.bin")}, seed=1)
    assert own.match_golden and given.match_golden
    assert given.tokens == own.tokens and given.token_cycles == own.token_cycles
    assert given.recorded["cycles"] >= given.sim_cycles and (tmp_path / "replay.bin").stat().st_size


def test_a_mapping_file_for_another_job_is_refused(tmp_path):
    import pickle

    from sparktile.cosim.benches.decode import decode_model, load_mapping
    from sparktile.hdl.mesh import MeshShape

    from sparktile.compiler.decoder_mapping import compile_decoder
    lm = decode_model(random=dict(TINY, seed=1))
    shape = MeshShape(2, 2, pe="core")
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps(compile_decoder(lm, shape, 3)))
    assert load_mapping(str(path), lm, shape, 3, taps=False, logits=False).max_context >= 3
    cases = [((MeshShape(2, 3, pe="core"), 3, False, False), "mesh"),
             ((shape, 3, True, False), "taps"), ((shape, 3, False, True), "logits"),
             ((shape, 10_000, False, False), "holds")]
    for (sh, ctx, taps, logits), what in cases:
        with pytest.raises(ValueError, match=what):
            load_mapping(str(path), lm, sh, ctx, taps=taps, logits=logits)
    other = decode_model(random=dict(TINY, hidden_size=32, seed=1))
    with pytest.raises(ValueError, match="hidden"):
        load_mapping(str(path), other, shape, 3, taps=False, logits=False)
    data = path.read_bytes()
    for bad in (data[: len(data) // 2], b"", bytes(64), pickle.dumps({"not": "a mapping"})):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="cannot read|not a DecoderMapping"):
            load_mapping(str(path), lm, shape, 3, taps=False, logits=False)
