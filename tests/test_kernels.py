# amaranth: UnusedElaboratable=no
"""The decoder kernels (``sparktile/compiler/kernels.py``) against ``golden_model/arith.py``.

Model: the arith function of each op (never changed to suit a kernel). Each kernel runs on the
ISS on random inputs over seeds and sizes and on the extremes (saturation at the int32 bounds,
all-equal rows for argmax and softmax, zero rows for the norm, the ends of rsqrt's range);
the scoreboard compares element for element and names the element and the seed. Each kernel
also runs once on the RTL core in the Amaranth simulator (small sizes), compared with the ISS
word for word and cycle for cycle by ``test_core_sim.compare`` (which names the first differing
word, the cycle and the seed), and its outputs with arith.
"""

import numpy as np
import pytest
from sparktile.golden_model import arith
from sparktile.hdl import isa

from sparktile.compiler import kernels as K

I32 = (-(1 << 31), (1 << 31) - 1)


def check(got, want, what, seed):
    got, want = np.asarray(got, np.int64).reshape(-1), np.asarray(want, np.int64).reshape(-1)
    assert got.shape == want.shape, f"{what}, seed={seed}: {got.shape} vs {want.shape}"
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{what}, seed={seed}: element {bad[0]}: kernel {got[bad[0]]}, "
                           f"arith {want[bad[0]]} ({bad.size} elements differ)")


def i32(rng, n, extremes=False):
    v = rng.integers(I32[0], I32[1], n, endpoint=True)
    if extremes:
        pick = rng.random(n) < 0.4
        v[pick] = rng.choice([I32[0], I32[1], I32[0] + 1, I32[1] - 1, 0, -1, 1], pick.sum())
    return v


def req(rng, n, signed=True):
    lo = -65535 if signed else 0
    return rng.integers(lo, 65536, n), rng.integers(0, 48, n)


# ---- the ISS against arith ----------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [1, 16, 37])
def test_residual_add(seed, n):
    rng = np.random.default_rng(seed)
    k = K.residual_add(n)
    for ext in (False, True):
        x, y = i32(rng, n, ext), i32(rng, n, ext)
        if ext:
            x[0], y[0] = I32[1], I32[1]
            if n > 1:
                x[1], y[1] = I32[0], I32[0]
        out, _ = k.run_iss(x=x, y=y)
        check(out["out"], arith.residual_add(x, y), f"residual_add n={n}", seed)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [1, 16, 37])
def test_requantize_per_channel(seed, n):
    rng = np.random.default_rng(seed)
    k = K.requantize(n)
    acc = i32(rng, n, extremes=True)
    mult, shift = req(rng, n)
    mult[0], shift[0] = -65535, 0
    out, _ = k.run_iss(acc=acc, q=(mult, shift))
    check(out["out"], arith.requantize_to(acc, mult, shift, 8), f"requantize n={n}", seed)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 2, 32, 256])
def test_argmax_lowest_index_on_ties(seed, n):
    rng = np.random.default_rng(seed)
    k = K.argmax(n)
    rows = [i32(rng, n), i32(rng, n, extremes=True), rng.integers(-3, 3, n),
            np.full(n, I32[0]), np.full(n, I32[1]), np.full(n, seed - 2)]
    top = i32(rng, n, extremes=True)
    top[rng.integers(0, n, 3)] = I32[1]
    rows.append(top)
    for z in rows:
        out, _ = k.run_iss(z=z)
        check(out["out"], [arith.argmax_int(z)], f"argmax n={n} row {z[:4]}...", seed)


def test_rsqrt_over_its_range():
    rng = np.random.default_rng(7)
    k = K.rsqrt()
    ns = [0, 1, 2, 3, 4, 255, 256, 257, (1 << 29) - 1, 1 << 29, (1 << 30) - 1, 1 << 30,
          (1 << 31) - 1, 1 << 31, (1 << 31) + 1, (1 << 32) - 1, 1 << 32, K.RSQRT_MAX_N,
          1 << 38, (1 << 38) - 1]
    ns += [1 << b for b in range(39)] + [(1 << b) - 1 for b in range(1, 40)]
    ns += [int(v) for v in rng.integers(0, K.RSQRT_MAX_N, 40, endpoint=True)]
    ns += [int(v) for v in rng.integers(0, 1 << 20, 20)]
    for n in ns:
        out, _ = k.run_iss(n=n)
        mant, shift = arith.rsqrt_int(np.array([n]))
        check([out["mant"][0], out["shift"][0]], [mant[0], shift[0]], f"rsqrt N={n}", 7)


def norm_rows(rng, d):
    return [i32(rng, d), i32(rng, d, extremes=True), np.zeros(d, np.int64),
            rng.integers(-50, 50, d), rng.integers(-(1 << 15), 1 << 15, d),
            rng.integers(-(1 << 16), 1 << 16, d), np.full(d, I32[0]), np.full(d, I32[1]),
            np.array([1] + [0] * (d - 1)), np.array([(1 << 15) - 1] * d),
            np.array([-(1 << 15)] * d), np.array([1 << 15] + [-1] * (d - 1))]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("d,scalar", [(1, False), (3, False), (16, False), (128, False),
                                      (256, False), (1, True), (3, True), (4, True),
                                      (16, True)])
def test_rms_norm(seed, d, scalar):
    """Whole rows, the steps before the rsqrt in vector or (``scalar``) in scalar ops: equal
    to ``arith.rms_norm_int`` on random rows, rows at the int32 extremes and edge rows."""
    rng = np.random.default_rng(seed)
    for eps_q in (0, 1, int(rng.integers(1, 1 << 24)), (1 << 31) - 1, 22517998137,
                  K.MAX_EPS_Q - 1):
        k = K.rms_norm(d, eps_q, scalar=scalar)
        mult, shift = req(rng, d)
        shift = rng.integers(20, 48, d)
        for x in norm_rows(rng, d):
            out, _ = k.run_iss(x=x, q=(mult, shift))
            want = arith.rms_norm_int(x[None], eps_q, mult, shift)[0]
            check(out["out"], want, f"rms_norm d={d} eps_q={eps_q} x={x[:3]}...", seed)


def test_kernels_with_the_shipped_models_constants():
    """The shipped model's eps_q (2**34.4: beyond a register) and the first layer's norm
    requantizations (whole row and a PE's 16 channels), softmax constants, SiLU table and
    gate x up requantization, and q RoPE requantization."""
    from sparktile.golden_model import load
    from sparktile.golden_model import rope as grope
    model = load.load_model()
    p = model.int_params()
    L = p.layers[0]
    rng = np.random.default_rng(3)
    mult, shift = (np.asarray(v, np.int64) for v in L.n1)
    for lo, hi in ((0, len(mult)), (16, 32)):
        k = K.rms_norm(hi - lo, p.eps_q)
        for x in norm_rows(rng, hi - lo):
            out, _ = k.run_iss(x=x, q=(mult[lo:hi], shift[lo:hi]))
            check(out["out"], arith.rms_norm_int(x[None], p.eps_q, mult[lo:hi],
                                                 shift[lo:hi])[0],
                  f"rms_norm (shipped, channels {lo}..{hi}) x={x[:3]}...", 3)
    sm_m, sm_s = (int(np.asarray(v).reshape(-1)[0]) for v in L.sm)
    for n in (32, 256):
        k = K.softmax(n, sm_m, sm_s)
        for s in (rng.integers(-(1 << 17), 1 << 17, n), rng.integers(-500, 500, n)):
            out, _ = k.run_iss(s=s)
            check(out["p"], arith.softmax_int(s, sm_m, sm_s), f"softmax (shipped) n={n}", 3)
    gm, gs = (np.asarray(v, np.int64)[:44] for v in L.gu)
    k = K.gate_up(44)
    g, u = rng.integers(-128, 128, 44), rng.integers(-128, 128, 44)
    out, _ = k.run_iss(gate=g, up=u, table=L.silu, q=(gm, gs))
    check(out["out"], arith.gate_up_int(g, u, L.silu, gm, gs), "gate_up (shipped)", 3)
    cfg = model.config
    cos_q, sin_q = arith.rope_table_int(*grope.rope_tables(cfg, np.arange(300)))
    rm, rs = (np.asarray(v, np.int64)[1] for v in L.q_rope)
    k = K.rope(cfg.head_dim)
    for pos in (0, 7, 299):
        x = rng.integers(-128, 128, cfg.head_dim)
        out, _ = k.run_iss(x=x, cos=cos_q[pos], sin=sin_q[pos], q=(rm, rs))
        want = arith.rope_int(x[None, None], cos_q[pos:pos + 1], sin_q[pos:pos + 1],
                              rm[None], rs[None])[0, 0]
        check(out["out"], want, f"rope (shipped) pos={pos}", 3)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [1, 2, 32, 256])
def test_softmax(seed, n):
    rng = np.random.default_rng(seed)
    consts = [(int(m), int(s)) for m, s in zip(rng.integers(1 << 15, 1 << 16, 3),
                                              rng.integers(8, 40, 3), strict=True)]
    consts += [(0, 0), (65535, 0), (65535, 47), (1, 0)]
    for mult, shift in consts:
        k = K.softmax(n, mult, shift)
        rows = [i32(rng, n), i32(rng, n, extremes=True), rng.integers(-3000, 3000, n),
                np.full(n, I32[0]), np.full(n, I32[1]), np.zeros(n, np.int64)]
        two = np.full(n, I32[0])
        two[0] = I32[1]
        rows.append(two)
        for s in rows:
            out, _ = k.run_iss(s=s)
            check(out["p"], arith.softmax_int(s, mult, shift),
                  f"softmax n={n} mult={mult} shift={shift} s={s[:3]}...", seed)


def rope_rows(head_dim, positions, theta=10000.0):
    """Q1.14 cos/sin rows as the golden model builds them (rotate-half layout)."""
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.outer(np.arange(positions, dtype=np.float64), inv)
    ang = np.concatenate([ang, ang], axis=-1)
    return arith.rope_table_int(np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("head_dim", [8, 32, 64])
def test_rope(seed, head_dim):
    rng = np.random.default_rng(seed)
    k = K.rope(head_dim)
    cos_q, sin_q = rope_rows(head_dim, 64)
    for pos in (0, 1, 17, 63):
        x = rng.integers(-128, 128, head_dim)
        if pos == 63:
            x = rng.choice([-128, 127], head_dim)
        mult, shift = req(rng, head_dim)
        shift = rng.integers(8, 30, head_dim)
        out, _ = k.run_iss(x=x, cos=cos_q[pos], sin=sin_q[pos], q=(mult, shift))
        want = arith.rope_int(x[None, None], cos_q[pos:pos + 1], sin_q[pos:pos + 1],
                              mult[None], shift[None])[0, 0]
        check(out["out"], want, f"rope head_dim={head_dim} pos={pos}", seed)
    # the table's extremes: +-1.0 (16384)
    x = rng.choice([-128, 127], head_dim)
    c, s = rng.choice([-16384, 16384], head_dim), rng.choice([-16384, 16384], head_dim)
    mult, shift = req(rng, head_dim)
    out, _ = k.run_iss(x=x, cos=c, sin=s, q=(mult, shift))
    check(out["out"], arith.rope_int(x[None, None], c[None], s[None], mult[None], shift[None])
          [0, 0], f"rope head_dim={head_dim} extremes", seed)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [1, 44, 352])
def test_gate_up(seed, n):
    rng = np.random.default_rng(seed)
    k = K.gate_up(n)
    table = arith.silu_table_int8(0.05, 0.001)
    for ext in (False, True):
        gate, up = rng.integers(-128, 128, n), rng.integers(-128, 128, n)
        if ext:
            gate, up = rng.choice([-128, 127], n), rng.choice([-128, 127], n)
            table = rng.choice([-(1 << 15), (1 << 15) - 1], 256)
        mult, shift = req(rng, n)
        out, _ = k.run_iss(gate=gate, up=up, table=table, q=(mult, shift))
        check(out["out"], arith.gate_up_int(gate, up, table, mult, shift), f"gate_up n={n}",
              seed)


def test_bad_sizes_and_inputs_are_named():
    with pytest.raises(K.KernelError, match=r"rms_norm width d must be an integer in 1..256, "
                                            r"not 300"):
        K.rms_norm(300, 0)
    with pytest.raises(K.KernelError, match=r"eps_q must be an integer in 0..274877906943 "
                                            r".*, not 274877906944"):
        K.rms_norm(16, 1 << 38)
    with pytest.raises(K.KernelError, match=r"rope head_dim must be a multiple of 8"):
        K.rope(12)
    with pytest.raises(K.KernelError, match=r"softmax mult must be an integer in 0..65535, "
                                            r"not -1"):
        K.softmax(8, -1, 3)
    with pytest.raises(K.KernelError, match=r"rsqrt kernel argument must be in"):
        K.rsqrt().image(n=1 << 39)
    with pytest.raises(K.KernelError, match=r"takes inputs x, y; missing \['y'\]"):
        K.residual_add(4).image(x=[1, 2, 3, 4])


# ---- the RTL core against the ISS, cycle for cycle ---------------------------------------

def rtl_run(kernel, seed, **values):
    """Run ``kernel`` on the RTL core (test_core_sim's bench: gaps on the ramp, stalls on the
    output) and on the ISS; ``compare`` checks every SRAM word, register and counter."""
    from test_core_sim import Setup, act_w, compare
    words = 1 << max(6, (kernel.words - 1).bit_length())
    s = Setup(sram_words=words)
    s.load(0, [0] * words)
    for a, w in kernel.image(**values).items():
        s.image[a] = w
    s.tasks[K.TASK_COLOR] = kernel.code_base
    s.stream = [act_w(0, K.TASK_COLOR)]
    rtl, st = compare(s, seed=seed, max_cycles=200000)
    out = {o: kernel.read(o, rtl["sram"]) for o in kernel.outputs}
    return out, rtl["counters"], st.stats


def _rtl_cases(rng):
    x8 = i32(rng, 8, extremes=True)
    table = arith.silu_table_int8(0.05, 0.001)
    g, u = rng.integers(-128, 128, 8), rng.integers(-128, 128, 8)
    mq, sq = req(rng, 8)
    cos, sin = rope_rows(8, 4)
    xr = rng.integers(-128, 128, 8)
    mr, sr = rng.integers(-65535, 65536, 8), rng.integers(8, 30, 8)
    xn = rng.integers(-(1 << 20), 1 << 20, 8)
    mn, sn = rng.integers(-65535, 65536, 8), rng.integers(20, 48, 8)
    sm = rng.integers(-(1 << 20), 1 << 20, 8)
    z = rng.integers(-3, 3, 8)
    return [
        (K.residual_add(8), dict(x=x8, y=i32(rng, 8, True)),
         lambda v: {"out": arith.residual_add(v["x"], v["y"])}),
        (K.requantize(8), dict(acc=x8, q=(mq, sq)),
         lambda v: {"out": arith.requantize_to(v["acc"], *v["q"], 8)}),
        (K.argmax(8), dict(z=z), lambda v: {"out": [arith.argmax_int(v["z"])]}),
        (K.rsqrt(), dict(n=(1 << 37) + 12345),
         lambda v: dict(zip(("mant", "shift"), arith.rsqrt_int(np.array([v["n"]])),
                            strict=True))),
        (K.rms_norm(8, 1000), dict(x=xn, q=(mn, sn)),
         lambda v: {"out": arith.rms_norm_int(v["x"][None], 1000, *v["q"])[0]}),
        (K.rms_norm(8, 1000, scalar=True), dict(x=x8, q=(mn, sn)),     # int32 extremes
         lambda v: {"out": arith.rms_norm_int(v["x"][None], 1000, *v["q"])[0]}),
        (K.softmax(8, 46000, 18), dict(s=sm),
         lambda v: {"p": arith.softmax_int(v["s"], 46000, 18)}),
        (K.rope(8), dict(x=xr, cos=cos[3], sin=sin[3], q=(mr, sr)),
         lambda v: {"out": arith.rope_int(v["x"][None, None], v["cos"][None], v["sin"][None],
                                          v["q"][0][None], v["q"][1][None])[0, 0]}),
        (K.gate_up(8), dict(gate=g, up=u, table=table, q=(mq, sq)),
         lambda v: {"out": arith.gate_up_int(v["gate"], v["up"], v["table"], *v["q"])}),
    ]


@pytest.mark.parametrize("case", range(8))
def test_kernel_on_the_rtl_core_equals_the_iss_cycle_for_cycle(case):
    seed = 40 + case
    kernel, values, golden = _rtl_cases(np.random.default_rng(seed))[case]
    out, counters, stats = rtl_run(kernel, seed, **values)
    for name, want in golden(values).items():
        check(out[name], want, f"{kernel.name} on the RTL core, output {name}", seed)
    assert counters["instructions"] == len(kernel.program) == stats.instructions
    assert counters["task_cycles"] - counters["stall_in"] - counters["stall_out"] == \
        stats.cycles


def test_cycles_at_the_shipped_sizes_are_the_iss_count_of_each_instruction():
    """The table of docs/architecture.md: each kernel's cycles are the sum of its
    instructions' fetch and execute cycles (the rule the RTL test above checks): the first
    fetch at isa.FETCH_CYCLES, the others at isa.PREFETCH_CYCLES (no kernel writes into the
    row of the instruction after the writing one)."""
    for row in K.shipped_table():
        k = row["kernel"]
        want = sum(isa.PREFETCH_CYCLES + isa.exec_cycles(i.op, i.n, i.imm, i.a, i.b)
                   for i in k.program) + isa.FETCH_CYCLES - isa.PREFETCH_CYCLES
        assert want == isa.program_cycles(k.program, k.code_base)
        assert row["cycles"] == want, row
        print(f"{row['op']:>24}: {row['instructions']:4d} instructions, "
              f"{row['cycles']:6d} cycles, {row['cycles'] / k.elements:7.1f} per element")


# ---- a row split over PEs: partial reductions exchanged ------------------------------------

SEND, RECV = 6, 7


def splits(total, parts, rng, uneven=False):
    if not uneven:
        return [total // parts] * parts
    cut = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False))
    return [int(v) for v in np.diff(np.concatenate([[0], cut, [total]]))]


def row_parts(sizes):
    edges = [0] + [int(v) for v in np.cumsum(sizes)]
    return list(zip(edges[:-1], edges[1:], strict=True))


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("width,parts,uneven", [(128, 8, False), (128, 5, True),
                                                (256, 2, False), (16, 4, False)])
def test_rms_norm_split_over_pes(seed, width, parts, uneven):
    """A token's row over a column of PEs: max and (Hi, Lo) exchanged; every PE's channels
    equal ``arith.rms_norm_int`` of the whole row, with the PEs' sums in vector ops, in
    scalar ops, or mixed (every other PE)."""
    rng = np.random.default_rng(seed)
    sizes = splits(width, parts, rng, uneven)
    mult, shift = req(rng, width)
    shift = rng.integers(20, 48, width)
    for eps_q, scalar in ((0, (False,)), (22517998137, (False,)), (22517998137, (True,)),
                          (3, (True, False))):
        ks = [K.rms_norm(b - a, eps_q, width=width, reduce=(SEND, RECV),
                         scalar=scalar[i % len(scalar)])
              for i, (a, b) in enumerate(row_parts(sizes))]
        for x in norm_rows(rng, width):
            res, _ = K.run_row([(k, dict(x=x[a:b], q=(mult[a:b], shift[a:b])))
                                for k, (a, b) in zip(ks, row_parts(sizes), strict=True)])
            got = np.concatenate([r[0]["out"] for r in res])
            check(got, arith.rms_norm_int(x[None], eps_q, mult, shift)[0],
                  f"rms_norm split {sizes} eps_q={eps_q} x={x[:3]}...", seed)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("n,parts,uneven", [(256, 8, False), (256, 3, True), (32, 4, False),
                                            (300, 12, True)])
def test_softmax_split_over_pes(seed, n, parts, uneven):
    """A head's scores over the PEs that hold its positions: max and sum exchanged."""
    rng = np.random.default_rng(seed)
    sizes = splits(n, parts, rng, uneven)
    mult, shift = int(rng.integers(1 << 15, 1 << 16)), int(rng.integers(10, 30))
    ks = [K.softmax(b - a, mult, shift, reduce=(SEND, RECV)) for a, b in row_parts(sizes)]
    rows = [i32(rng, n), i32(rng, n, extremes=True), rng.integers(-3000, 3000, n),
            np.full(n, 77)]
    for s in rows:
        res, _ = K.run_row([(k, dict(s=s[a:b]))
                            for k, (a, b) in zip(ks, row_parts(sizes), strict=True)])
        got = np.concatenate([r[0]["p"] for r in res])
        check(got, arith.softmax_int(s, mult, shift), f"softmax split {sizes} s={s[:3]}...",
              seed)


@pytest.mark.parametrize("seed", range(3))
def test_argmax_split_over_pes_ties_across_pes(seed):
    rng = np.random.default_rng(seed)
    n, sizes = 256, splits(256, 8, rng, uneven=seed == 2)
    ks = [K.argmax(b - a, offset=a, total=n, reduce=(SEND, RECV))
          for a, b in row_parts(sizes)]
    tie = rng.integers(-5, 5, n)
    tie[[200, 37, 130]] = 9                      # the maximum on three PEs: 37 wins
    for z in (i32(rng, n), i32(rng, n, extremes=True), tie, np.full(n, I32[0])):
        res, _ = K.run_row([(k, dict(z=z[a:b]))
                            for k, (a, b) in zip(ks, row_parts(sizes), strict=True)])
        for j, r in enumerate(res):
            check(r[0]["out"], [arith.argmax_int(z)], f"argmax split {sizes}, PE {j}", seed)


def test_a_split_kernel_on_the_rtl_core_waits_for_its_row():
    """One middle PE of a split norm, softmax and argmax on the RTL core: it sends its
    partials, its RECVs wait for the row's combined words (which the driver offers with
    gaps), and everything equals the ISS cycle for cycle (stalls counted apart)."""
    from test_core_sim import Setup, act_w, compare, data_w
    rng = np.random.default_rng(50)
    x = rng.integers(-(1 << 20), 1 << 20, 32)
    mult, shift = req(rng, 32)
    shift = rng.integers(20, 48, 32)
    sc = rng.integers(-(1 << 18), 1 << 18, 32)
    z = rng.integers(-4, 4, 32)
    cases = [
        ([(K.rms_norm(8, 5000, width=32, reduce=(SEND, RECV)),
           dict(x=x[a:a + 8], q=(mult[a:a + 8], shift[a:a + 8]))) for a in range(0, 32, 8)],
         "out", arith.rms_norm_int(x[None], 5000, mult, shift)[0]),
        ([(K.softmax(8, 46000, 18, reduce=(SEND, RECV)), dict(s=sc[a:a + 8]))
          for a in range(0, 32, 8)], "p", arith.softmax_int(sc, 46000, 18)),
        ([(K.argmax(8, offset=a, total=32, reduce=(SEND, RECV)), dict(z=z[a:a + 8]))
          for a in range(0, 32, 8)], "out", None),
    ]
    for parts, name, want in cases:
        res, combined = K.run_row(parts)
        kernel, values = parts[1]
        words = 1 << max(6, (kernel.words - 1).bit_length())
        s = Setup(sram_words=words)
        s.load(0, [0] * words)
        s.image.update(kernel.image(**values))
        s.tasks[K.TASK_COLOR] = kernel.code_base
        s.queues = [RECV]
        s.stream = [act_w(0, K.TASK_COLOR)] + [data_w(w, RECV) for w in combined]
        rtl, _ = compare(s, seed=50, p_valid=0.3, max_cycles=200000)
        sent = [int(v) for v in s32(rtl["sent"].get(SEND, []))]
        assert sent == res[1][2], f"{kernel.name}: partials sent {sent} != {res[1][2]}"
        got = kernel.read(name, rtl["sram"])
        if want is None:
            want = [arith.argmax_int(z)]
        else:
            want = want[8:16]
        check(got, want, f"{kernel.name} split, PE 1 on the RTL core", 50)


def s32(words):
    return np.asarray(words, np.uint32).view(np.int32).astype(np.int64)
