"""Column strips (issue 13 item 2): a GEMV's rows over independent strips, no long reduction.

Pure-Python checks of the placement (every row once, shares, colors, routes deadlock-free,
SRAM) on random shapes, then the RTL: bit-exact and cycle-exact against
:func:`~sparktile.compiler.strips.strip_gemv_cycles` on meshes with one, two and three
columns, a caught fault named at its element, and the golden model's independent matmuls run
at once with the same tokens.
"""

import numpy as np
import pytest
from sparktile.cosim.benches.gemv import gemv, random_problem
from sparktile.cosim.benches.llm import share_strips, stationary_bases
from sparktile.golden_model.testing import random_model, tiny_config
from sparktile.hdl.formats import ROUTABLE_COLORS
from sparktile.hdl.mesh import MeshShape

from sparktile.compiler.mapping import MappingError
from sparktile.compiler.routes import check_deadlock_free
from sparktile.compiler.strips import (
    STRIP_Y0,
    compile_gemv_strips,
    split_strips,
    strip_count,
    strip_parts,
    strip_rows,
    strip_width,
    strip_words,
    strips_cycles,
)


@pytest.mark.parametrize("seed", range(6))
def test_strip_rows_and_parts_hold_every_row_once(seed):
    rng = np.random.default_rng(seed)
    shape = MeshShape(int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    m = int(rng.integers(1, 300))
    strips = int(rng.integers(1, strip_count(shape) + 1))
    held = []
    for (row0, rows), s in zip(strip_rows(m, strips), range(strips), strict=False):
        assert rows >= 1
        parts = strip_parts(shape, s, rows)
        assert sum(p[1] for p in parts) == rows
        for off, part_rows, region, x_from, y_to in parts:
            region.check(shape)
            held += range(row0 + off, row0 + off + part_rows)
            assert x_from == ("N" if region.row == 0 else "S")
            assert y_to in ("E", "W")
    assert held == list(range(m)), (shape, m, strips)


def test_every_strip_has_its_own_color():
    for cols in range(1, 33):
        shape = MeshShape(1, cols)
        w = strip_width(shape)
        assert cols % w == 0 and strip_count(shape) + STRIP_Y0 <= ROUTABLE_COLORS
        # the narrowest strips that do: one column up to 27, two at 28 and 32
        assert w == (1 if cols <= ROUTABLE_COLORS - STRIP_Y0 else 2 if cols % 2 == 0 else w)


@pytest.mark.parametrize("seed", range(5))
def test_split_strips_shares_in_proportion(seed):
    rng = np.random.default_rng(seed)
    shape = MeshShape(2, int(rng.integers(3, 17)))
    k = int(rng.integers(1, min(4, strip_count(shape)) + 1))
    sizes = [int(v) for v in rng.integers(1, 1000, k)]
    shares = split_strips(shape, sizes)
    assert [len(r) for r in shares] and min(len(r) for r in shares) >= 1
    assert shares[0].start == 0 and shares[-1].stop == strip_count(shape)
    assert all(a.stop == b.start for a, b in zip(shares, shares[1:], strict=False))
    with pytest.raises(MappingError, match="need 4 strips; the 3x3 mesh has 3"):
        split_strips(MeshShape(3, 3), [1, 2, 3, 4])


@pytest.mark.parametrize("mesh", [(8, 8), (5, 7), (1, 4), (4, 1), (2, 32)])
def test_a_whole_model_on_strips_has_deadlock_free_consistent_routes(mesh):
    """Every matrix of a model stationary at once: one route table serves them all (a
    conflicting route raises while compiling), with no cycle in its channel dependencies,
    within the SRAM the plan reports."""
    shape = MeshShape(*mesh, sram_kb=64)
    ops = random_model(tiny_config(), seed=3).matmul_ops()
    bases, words = stationary_bases(shape, ops)
    shares = share_strips(shape, ops)
    prog = None
    for op, base in zip(ops, bases, strict=True):
        g = compile_gemv_strips(shape, op.w_q, op.mult, op.shift, base=base,
                                out_int32=op.out == "int32", strips=shares[id(op)],
                                program=prog)
        prog = g.program
        assert base + g.words <= words
    check_deadlock_free(prog)
    if strip_count(shape) >= 3:     # q, k and v side by side
        q, k, v = (shares[id(op)] for op in ops[:3])
        assert q.stop == k.start and k.stop == v.start


def test_strips_that_are_not_there_or_do_not_fit_say_so():
    shape = MeshShape(2, 4, sram_kb=4)
    w = np.ones((8, 8), np.int8)
    with pytest.raises(MappingError, match="strips 2..4 are not in the 4 strips of the 2x4"):
        compile_gemv_strips(shape, w, 1, 0, strips=range(2, 5))
    with pytest.raises(MappingError, match=r"needs \d+ SRAM words per PE .* 1024 words"):
        compile_gemv_strips(shape, np.ones((64, 4096), np.int8), 1, 0)
    assert strip_words(shape, 64, 4096) > shape.sram_words


@pytest.mark.parametrize("mesh,m,n,batch,out_int32,seed", [
    ((2, 3), 37, 50, 3, True, 21),
    ((3, 1), 20, 30, 2, False, 22),
    ((2, 2), 5, 40, 1, False, 23),
    ((2, 3), 2, 9, 2, False, 24),       # fewer rows than strips: idle strips
])
def test_strips_gemv_is_bit_exact_and_cycle_exact(run_bench, mesh, m, n, batch, out_int32,
                                                   seed):
    _check_strips(run_bench, mesh, m, n, batch, out_int32, seed)


@pytest.mark.parametrize("seed", [101, 102, 103])
def test_strips_gemv_on_random_shapes(run_bench, seed):
    """Shapes no test names: a mesh of the built ones, M, N, batch and the output type
    drawn from the seed."""
    rng = np.random.default_rng(seed)
    mesh = [(2, 2), (2, 3), (3, 1)][int(rng.integers(3))]
    _check_strips(run_bench, mesh, int(rng.integers(1, 200)), int(rng.integers(1, 160)),
                  int(rng.integers(1, 4)), bool(rng.integers(2)), seed)


def _check_strips(run_bench, mesh, m, n, batch, out_int32, seed):
    r = run_bench(*mesh, gemv, {"m": m, "n": n, "batch": batch, "seed": seed,
                                "out_int32": out_int32, "layout": "strips"}, seed=seed)
    assert r.status == "complete" and r.layout == "strips"
    assert r.match, f"seed {seed}: first difference {r.first_diff}"
    assert r.cycles == r.model_cycles, (r.cycles, r.model_cycles)
    assert r.task_errors == 0


def test_strips_under_stalls_on_every_edge_stream(run_bench):
    """Random stalls on the north and south sources and the east and west sinks: the same
    answer, later than the unstalled model."""
    r = run_bench(2, 3, gemv, {"m": 41, "n": 77, "batch": 3, "seed": 2, "stall": 0.6,
                               "layout": "strips"}, seed=2)
    assert r.status == "complete" and r.match, r.first_diff
    assert r.cycles >= r.model_cycles


@pytest.mark.slow
def test_strips_of_two_columns_on_a_mesh_wider_than_the_colors(run_bench):
    """28 columns: 14 strips of two (each a chain of two PEs, both halves), on the RTL."""
    r = run_bench(2, 28, gemv, {"m": 300, "n": 100, "batch": 2, "seed": 41,
                                "layout": "strips"}, seed=41)
    assert strip_width(MeshShape(2, 28)) == 2
    assert r.status == "complete" and r.match, r.first_diff
    assert r.cycles == r.model_cycles, (r.cycles, r.model_cycles)


def test_a_wrong_result_on_strips_is_caught_and_named(run_bench):
    m, n, row = 11, 13, 6
    r = run_bench(2, 3, gemv, {"m": m, "n": n, "batch": 2, "seed": 31, "fault_row": row,
                               "layout": "strips"}, seed=31)
    assert r.status == "complete" and not r.match
    d = r.first_diff
    assert (d["vector"], d["index"]) == (0, row) and d["got"] != d["expected"]
    w, _x, mult, shift = random_problem(m, n, 2, 31)
    g = compile_gemv_strips(MeshShape(2, 3), w, mult, shift)
    assert d["mesh_row"] == g.row_of(row) and d["cycle"] > 0


def test_matmuls_run_at_once_cost_less_than_one_after_another():
    """The model of q, k and v side by side against the three on every strip in turn (and
    both at least the MAC bound of the slowest)."""
    shape = MeshShape(8, 8)
    q, k, v = split_strips(shape, [128 * 128, 64 * 128, 64 * 128])
    together = strips_cycles(shape, [(128, 128, False, q), (64, 128, False, k),
                                     (64, 128, False, v)])
    apart = sum(strips_cycles(shape, [(m, 128, False, None)]) for m in (128, 64, 64))
    assert together < apart
    assert together >= (128 + 64 + 64) * 128 / (4 * shape.pes)


class _Recorder:
    """A backend with ``matmul_many``: records how the model issues its matmuls."""

    def __init__(self):
        from sparktile.golden_model.backend import NumpyBackend
        self.numpy, self.calls = NumpyBackend(), []

    def matmul(self, op, x_q):
        self.calls.append((op.kind,))
        return self.numpy.matmul(op, x_q)

    def matmul_many(self, pairs):
        self.calls.append(tuple(op.kind for op, _x in pairs))
        return [self.numpy.matmul(op, x) for op, x in pairs]


def test_the_model_issues_independent_matmuls_together_with_the_same_tokens():
    m = random_model(tiny_config(), seed=5)
    want = m.generate("def f", 3, mode="int8", temperature=0).token_ids
    rec = _Recorder()
    m.set_backend(rec)
    got = m.generate("def f", 3, mode="int8", temperature=0).token_ids
    assert list(got) == list(want)
    assert ("q", "k", "v") in rec.calls and ("gate", "up") in rec.calls
    assert ("q",) not in rec.calls and ("o",) in rec.calls
