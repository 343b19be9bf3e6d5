"""Hardware in the loop: the llm_run generates with every matmul on the RTL mesh (issue 5)."""

import pytest
from sparktile.cosim.benches.llm import llm_run, plan_weights
from sparktile.cosim.sim.session import BenchError, run_job
from sparktile.golden_model import load_model
from sparktile.golden_model.checkpoint import save_sparktile_folder
from sparktile.golden_model.testing import random_model, tiny_config
from sparktile.hdl.mesh import MeshShape

from sparktile.compiler.mapping import MappingError


def _golden(model, prompt, max_tokens, seed):
    """The scoreboard's model: the golden model alone, in this process, with the sampling
    ``llm_run`` uses by default."""
    g = load_model(model).generate(prompt, max_tokens, mode="int8", temperature=0.8, top_k=40,
                                   seed=seed)
    return [int(t) for t in g.token_ids]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    m = random_model(tiny_config(num_layers=1), seed=11)  # fits 2x3 SRAM
    save_sparktile_folder(folder, m.config, m.weights)
    return str(folder)


@pytest.mark.parametrize("layout", ["strips", "chain"])
def test_stationary_weights_generate_like_the_golden_model(tiny_folder, layout):
    r = run_job(MeshShape(2, 3), llm_run, {"prompt": "def f(x):", "max_tokens": 3,
                                       "model": tiny_folder, "weights": "stationary",
                                       "seed": 4, "layout": layout}, seed=4)
    assert r.weights_mode == "stationary" and r.layout == layout
    assert r.match_golden
    assert r.tokens == _golden(tiny_folder, "def f(x):", 3, 4)
    assert len(r.tokens) == 3
    ops = len(load_model(tiny_folder).matmul_ops())
    assert r.matmuls == 3 * ops  # prefill + 2 decode steps, every matmul on the RTL
    # Decode cycles per token: the sum of the analytic GEMV model over every matmul (or run
    # of matmuls side by side on the strips: exact there), and never below the MAC bound.
    for c in r.decode_cycles:
        slack = 0 if layout == "strips" else 2 * ops
        assert abs(c - r.decode_model_cycles) <= slack, (c, r.decode_model_cycles)
        assert c >= r.decode_mac_bound_cycles
    assert 0 < r.mac_utilization["overall"] <= 1
    assert set(r.mac_utilization) >= {"q", "k", "v", "o", "gate", "up", "down", "head"}


def test_streamed_weights_shipped_model():
    r = run_job(MeshShape(2, 3), llm_run, {"prompt": "import os\n", "max_tokens": 2,
                                       "seed": 2}, seed=2)
    assert r.weights_mode == "streaming"
    assert r.match_golden and r.tokens == _golden(None, "import os\n", 2, 2)
    assert r.decode_cycles_per_token == pytest.approx(r.decode_model_cycles, abs=60)


def test_a_bad_weight_is_caught_with_layer_matmul_element_cycle_and_seed(tiny_folder):
    with pytest.raises(BenchError) as err:
        run_job(MeshShape(2, 3), llm_run, {"prompt": "ab", "max_tokens": 2, "model": tiny_folder,
                                       "weights": "stationary", "seed": 9,
                                       "corrupt": "layers.0.mlp.up"}, seed=9)
    info = err.value.info
    assert info["matmul"] == "layers.0.mlp.up" and info["layer"] == 0
    # A one-LSB weight error shows only once requantization does not round it away, so it may
    # be caught in prefill or in a later decode step; either way it is caught.
    assert info["phase"] in ("prefill", "decode") and info["seed"] == 9
    assert info["index"] == 0 and info["got"] != info["expected"]
    assert isinstance(info["cycle"], int) and info["cycle"] > 0


def test_weights_that_do_not_fit_say_so():
    ops = load_model().matmul_ops()
    with pytest.raises(MappingError, match=r"stationary weights need \d+ SRAM words per PE on "
                                           r"the 2x2 mesh, but a PE has 4096"):
        plan_weights(MeshShape(2, 2), ops, "stationary")
    with pytest.raises(MappingError, match=r"alone needs \d+ SRAM words per PE on the 1x1"):
        plan_weights(MeshShape(1, 1, sram_kb=4), ops, "auto")
    with pytest.raises(MappingError, match="weights mode must be one of"):
        plan_weights(MeshShape(2, 2), ops, "sometimes")
    with pytest.raises(MappingError, match="layout must be one of strips, chain, not 'tree'"):
        plan_weights(MeshShape(2, 2), ops, "auto", "tree")
    assert plan_weights(MeshShape(8, 8), ops, "auto")[0] == "stationary"


@pytest.mark.parametrize("seed", [51, 52])
def test_random_configurations_on_strips_match_and_equal_the_model(tmp_path, seed):
    """Small models drawn from the seed (heads, KV heads, widths, Qwen2-style biases) on a
    2x2 mesh: two strips, so q/k/v (three matrices) run one after another and gate/up side
    by side; every matmul bit-exact, each decode token the cycle model's."""
    import numpy as np
    rng = np.random.default_rng(seed)
    kv = int(rng.choice([1, 2]))
    cfg = tiny_config(num_layers=1, num_kv_heads=kv, num_heads=kv * int(rng.integers(1, 3)),
                      head_dim=int(rng.choice([8, 16])),
                      hidden_size=int(rng.choice([32, 48, 64])),
                      intermediate_size=int(rng.integers(40, 100)),
                      attention_bias=bool(rng.integers(2)))
    m = random_model(cfg, seed=seed)
    save_sparktile_folder(tmp_path, m.config, m.weights)
    r = run_job(MeshShape(2, 2), llm_run, {"prompt": "x = ", "max_tokens": 3,
                                       "model": str(tmp_path), "weights": "stationary",
                                       "seed": seed, "temperature": 0.0}, seed=seed)
    assert r.match_golden and r.layout == "strips", r
    want = load_model(str(tmp_path)).generate("x = ", 3, mode="int8", temperature=0.0)
    assert r.tokens == [int(t) for t in want.token_ids]
    assert all(c == r.decode_model_cycles for c in r.decode_cycles), \
        (r.decode_cycles, r.decode_model_cycles)
