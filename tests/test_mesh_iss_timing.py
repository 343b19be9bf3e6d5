"""The mesh of ISSs' cycle model against the RTL's counter: the on-fabric decoder's cycles per
token on the cached core meshes (16 KiB), position by position, from the RTL bench
(``cosim/benches/decode.py``, the harness's cycle counter) and from
:func:`~sparktile.compiler.mesh_iss.decode_on_iss` on the same model, mapping and token ids.
The model's claim is 2 % (it is exact on these meshes when written); the wafer extrapolation's
decoder terms are fitted from it (``scripts/perf/decoder_terms.py``)."""

import pytest
from sparktile.cosim.benches.decode import decode_model, decode_run
from sparktile.hdl.mesh import MeshShape

from sparktile.compiler.decoder_mapping import compile_decoder
from sparktile.compiler.mesh_iss import decode_on_iss

TINY = dict(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
            intermediate_size=32, vocab_size=32)
#: The model's promise: each position's cycles within this fraction of the RTL's.
TOLERANCE = 0.02

CASES = [
    # rows, cols, model, prompt ids, new tokens
    (2, 2, dict(TINY, hidden_size=32, seed=1), [1, 7, 30], 2),         # GQA 2:1, two rows
    (2, 3, dict(TINY, num_layers=2, num_heads=1, seed=2), [3, 9], 2),  # two layers, 3 columns
    (3, 1, dict(TINY, attention_bias=True, seed=3), [5, 2], 2),        # one column
]


@pytest.mark.parametrize("rows,cols,model,ids,n_new", CASES)
def test_mesh_iss_cycles_match_the_rtl_counter(run_bench, rows, cols, model, ids, n_new):
    context = len(ids) + n_new + 2            # slots beyond the positions run: masked work
    r = run_bench(rows, cols, decode_run, {"ids": ids, "max_tokens": n_new, "random": model,
                                           "context": context, "seed": model["seed"]},
                  seed=model["seed"], pe="core")
    assert r.match_golden, r.first_diff
    lm = decode_model(random=model)
    mapping = compile_decoder(lm, MeshShape(rows, cols, pe="core"), context)
    iss = decode_on_iss(mapping, lm, ids, n_new)
    assert iss["first_diff"] is None and iss["tokens"] == r.tokens
    assert len(iss["token_cycles"]) == len(r.token_cycles) == len(ids) + n_new - 1
    for pos, (model_cycles, rtl_cycles) in enumerate(
            zip(iss["token_cycles"], r.token_cycles, strict=True)):
        assert abs(model_cycles - rtl_cycles) <= TOLERANCE * rtl_cycles, (
            f"position {pos}: mesh ISS {model_cycles} cycles, RTL {rtl_cycles}")
