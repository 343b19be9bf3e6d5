"""The whole-decoder SRAM plan (sparktile.compiler.sram_plan): budgets add up, the context is
the largest that fits, and every way of not fitting is a MappingError naming the words."""

import math

import numpy as np
import pytest
from sparktile.golden_model import load_model
from sparktile.golden_model.intpath import MAX_POSITIONS
from sparktile.golden_model.testing import random_model, tiny_config
from sparktile.hdl.mesh import MeshShape

from sparktile.compiler.mapping import MappingError, Region, gemv_words
from sparktile.compiler.sram_plan import EXP2_TABLE_WORDS, plan_sram


def _plan(config, shape, **kw):
    return plan_sram(config, shape, random_model(config).matmul_shapes(), **kw)


def _check_budget(p):
    """Every PE's words fit, and one more position would not: the context is the largest."""
    sram = p.sram_words
    assert p.fixed + p.positions_per_pe * p.kv_words_per_position <= sram
    assert p.fixed + (p.positions_per_pe + 1) * p.kv_words_per_position > sram
    col = p.fixed + p.column_state
    assert col + p.positions_per_column_pe * p.kv_words_per_position <= sram
    assert col + (p.positions_per_column_pe + 1) * p.kv_words_per_position > sram
    rows = p.mesh.rows
    total = p.positions_per_pe * (p.mesh.pes - rows) + p.positions_per_column_pe * rows
    assert p.max_context == min(total, MAX_POSITIONS)


def test_shipped_model_on_the_default_mesh_with_wse_sram():
    m = load_model()
    p = plan_sram(m.config, MeshShape(8, 8, sram_kb=48), m.matmul_shapes())
    _check_budget(p)
    # the weights are today's stationary mapping, word for word
    region = Region.whole(MeshShape(8, 8))
    assert p.weights == sum(gemv_words(*s.shape, region, 256)["words"]
                            for s in m.matmul_shapes())
    # keys and values of 4 layers x 2 KV heads x 32 dims, int8: 128 words, + 16 RoPE + 1
    assert p.kv_words_per_position == 2 * 4 * 2 * 8 + 16 + 1
    assert p.max_context >= 1024
    p.check_context(p.max_context)
    with pytest.raises(MappingError, match=rf"context of {p.max_context + 1} positions.*"
                                           rf"at most {p.max_context}"):
        p.check_context(p.max_context + 1)


@pytest.mark.parametrize("seed", range(12))
def test_random_configs_and_meshes(seed):
    rng = np.random.default_rng(seed)
    hd = int(rng.choice([8, 16, 32]))
    nkv = int(rng.integers(1, 4))
    cfg = tiny_config(hidden_size=int(rng.choice([32, 64, 96])), num_layers=int(rng.integers(1, 4)),
                      num_heads=nkv * int(rng.integers(1, 3)), num_kv_heads=nkv, head_dim=hd,
                      intermediate_size=int(rng.choice([64, 96, 160])),
                      attention_bias=bool(rng.integers(2)))
    shape = MeshShape(int(rng.integers(1, 6)), int(rng.integers(1, 6)),
                      sram_kb=int(rng.choice([4, 8, 16, 48])))
    try:
        p = _plan(cfg, shape)
    except MappingError as e:
        # a refusal names words against the PE's SRAM
        assert f"{shape.sram_words}" in str(e)
        return
    _check_budget(p)
    assert p.kv_words_per_position == 2 * cfg.num_layers * nkv * math.ceil(hd / 4) + hd // 2 + 1


def test_more_sram_never_holds_less():
    cfg = tiny_config()
    last = 0
    for kb in (24, 32, 40, 48, 64):
        p = _plan(cfg, MeshShape(2, 3, sram_kb=kb))
        assert p.max_context >= last
        last = p.max_context


def test_refusals_name_what_does_not_fit():
    cfg = tiny_config()
    with pytest.raises(MappingError, match=r"stationary weights need \d+ SRAM words per PE on "
                                           r"the 1x1 mesh, but a PE has 256 \(1 KiB\)"):
        _plan(cfg, MeshShape(1, 1, sram_kb=1))
    weights = _plan(cfg, MeshShape(2, 2, sram_kb=48)).weights
    # room for the weights but not the programs
    kb = math.ceil((weights + 1) / 256)
    with pytest.raises(MappingError, match=rf"every PE needs \d+ SRAM words \({weights} "
                                           rf"weights, {EXP2_TABLE_WORDS} exp2 table, 4096 "
                                           r"programs"):
        _plan(cfg, MeshShape(2, 2, sram_kb=kb), program_words=4096)
    for bad in (-1, 1.5, True, "512"):
        with pytest.raises(MappingError, match="program_words must be an integer >= 0"):
            _plan(cfg, MeshShape(2, 2), program_words=bad)


def test_the_context_is_capped_by_the_int_path():
    cfg = tiny_config(num_layers=1, num_kv_heads=1, num_heads=1, head_dim=8)
    p = _plan(cfg, MeshShape(16, 16, sram_kb=256), program_words=0)
    assert p.max_context == MAX_POSITIONS
