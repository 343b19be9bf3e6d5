"""The requantization pipeline (:class:`sparktile.hdl.requant.RequantPipeline`) on its own.

Driver, monitor, model and scoreboard in one cycle loop of Amaranth's simulator: the driver
offers rows (int32 sum, ``mult``/``shift`` as the requantization word allows, byte lane, emit)
with seeded random gaps and holds each until it is taken; the monitor sinks ``o`` with seeded
random ``ready`` stalls and checks the stream rule; the model is
:func:`sparktile.golden_model.arith.requantize` and ``pack_int8``; the scoreboard compares every
packed word bit-exactly and names the first differing lane, the cycle and the seed.

The ordering rule: the PE sends its int32 results (which bypass this pipeline) only while
``empty``; so ``empty`` must be 0 whenever an emitting row has been taken and its word has not
left yet, and 1 again once everything has drained.
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator
from sparktile.golden_model.arith import SHIFT_MAX, pack_int8, requantize
from sparktile.hdl.requant import RequantPipeline

INT32_EXTREMES = [-(1 << 31), (1 << 31) - 1, -1, 0, 1, -128, 127, 255, -257]


def random_rows(rng: random.Random, n: int, extremes: bool = False) -> list[dict]:
    """``n`` rows in words of 1..4 lanes (the last lane of a word emits), as the PE sends them
    (lane = row % 4, a short last word when ``m`` is not a multiple of 4)."""
    rows, lane = [], 0
    while len(rows) < n:
        if extremes and rng.random() < 0.5:
            v = rng.choice(INT32_EXTREMES)
            mult = rng.choice([0, 1, (1 << 16) - 1, 1 << 15])
            shift = rng.choice([0, 1, 15, 16, 31, SHIFT_MAX])
        else:
            v = rng.randint(-(1 << 31), (1 << 31) - 1)
            mult = rng.randrange(1 << 16)
            shift = rng.randint(0, SHIFT_MAX)
        emit = lane == 3 or len(rows) == n - 1 or rng.random() < 0.1
        rows.append({"v": v, "mult": mult, "shift": shift, "lane": lane, "emit": int(emit)})
        lane = 0 if emit else lane + 1
    return rows


def model(rows: list[dict]) -> list[tuple[int, list[int]]]:
    """Expected packed words, each with the indices of the rows that form it."""
    out, lanes, idx = [], [0, 0, 0, 0], []
    for i, r in enumerate(rows):
        lanes[r["lane"]] = int(requantize(r["v"], r["mult"], r["shift"]))
        idx.append(i)
        if r["emit"]:
            out.append((int(pack_int8(np.array(lanes, dtype=np.int8))[0]), idx))
            lanes, idx = [0, 0, 0, 0], []
    return out


def run_pipeline(rows: list[dict], *, seed: int, p_valid=1.0, p_ready=1.0, max_cycles=None):
    """Stream ``rows`` through the pipeline; returns (words, out_cycles, in_cycles)."""
    dut = RequantPipeline()
    rng = random.Random(seed)
    expected = model(rows)
    max_cycles = max_cycles or 40 + 20 * len(rows)
    result = {"words": [], "out_cycles": [], "in_cycles": []}

    async def bench(ctx):
        todo = deque(rows)
        holding, waiting, cycle, emitted_in = None, None, 0, 0
        while len(result["words"]) < len(expected) or not ctx.get(dut.empty):
            # Driver: offer a row (held until taken).
            if holding is None and todo and rng.random() < p_valid:
                holding = todo.popleft()
            ctx.set(dut.i.valid, holding is not None)
            if holding is not None:
                for name, value in holding.items():
                    ctx.set(getattr(dut.i.payload, name),
                            value & 0xFFFFFFFF if name == "v" else value)
            ready = int(rng.random() < p_ready)
            ctx.set(dut.o.ready, ready)
            # Monitor: stream rule, then the transfer.
            o_valid, o_word = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
            if waiting is not None:
                assert o_valid and o_word == waiting, (
                    f"seed={seed}: cycle {cycle}: o broke the stream rule: "
                    f"{waiting:#010x} -> valid={o_valid} {o_word:#010x}")
            waiting = o_word if o_valid and not ready else None
            # Ordering rule: a bypassing result sent now must not overtake an int8 one.
            empty = ctx.get(dut.empty)
            assert not (empty and emitted_in > len(result["words"])), (
                f"seed={seed}: cycle {cycle}: empty=1 with "
                f"{emitted_in - len(result['words'])} int8 word(s) still in flight")
            if o_valid and ready:
                # Scoreboard.
                n = len(result["words"])
                assert n < len(expected), f"seed={seed}: cycle {cycle}: extra word {o_word:#x}"
                want, idx = expected[n]
                if o_word != want:
                    lane = next(b for b in range(4) if (o_word ^ want) >> 8 * b & 0xFF)
                    r = rows[idx[0] + lane] if lane < len(idx) else None
                    raise AssertionError(
                        f"seed={seed}: cycle {cycle}: word {n}, lane {lane}: got "
                        f"{o_word >> 8 * lane & 0xFF:#04x}, want {want >> 8 * lane & 0xFF:#04x}"
                        f" (row {r}; words {o_word:#010x} vs {want:#010x})")
                result["words"].append(o_word)
                result["out_cycles"].append(cycle)
            if holding is not None and ctx.get(dut.i.ready):
                result["in_cycles"].append(cycle)
                emitted_in += holding["emit"]
                holding = None
            await ctx.tick()
            cycle += 1
            assert cycle < max_cycles, (
                f"seed={seed}: {len(result['words'])} of {len(expected)} words after "
                f"{cycle} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(result["words"]) == len(expected)
    return result


@pytest.mark.parametrize("seed", range(6))
def test_random_rows_with_stalls_on_both_sides(seed):
    rng = random.Random(1000 + seed)
    rows = random_rows(rng, 120, extremes=seed % 2 == 1)
    run_pipeline(rows, seed=seed, p_valid=0.7, p_ready=0.6)


def test_saturation_extremes_and_every_shift():
    rows = []
    for v in INT32_EXTREMES:
        for mult in (0, 1, (1 << 15), (1 << 16) - 1):
            for shift in range(SHIFT_MAX + 1):
                rows.append({"v": v, "mult": mult, "shift": shift,
                             "lane": len(rows) % 4, "emit": int(len(rows) % 4 == 3)})
    rows[-1]["emit"] = 1
    run_pipeline(rows, seed=0)


def test_full_rate_and_latency():
    # Output always taken, input every cycle: one row per cycle, four cycles from the row
    # that completes a word being taken to the word on ``o``.
    rows = random_rows(random.Random(7), 64)
    rows = [dict(r, lane=i % 4, emit=int(i % 4 == 3)) for i, r in enumerate(rows)]
    res = run_pipeline(rows, seed=7)
    assert res["in_cycles"] == list(range(64)), res["in_cycles"]
    assert res["out_cycles"] == [4 * k + 3 + 4 for k in range(16)], res["out_cycles"]


@pytest.mark.parametrize("seed", range(3))
def test_empty_gates_bypass_results(seed):
    # Sparse rows and a slow sink: ``empty`` toggles often; the bench's ordering check
    # (no int8 word in flight while ``empty``) runs every cycle.
    rng = random.Random(2000 + seed)
    rows = random_rows(rng, 40)
    run_pipeline(rows, seed=seed, p_valid=0.2, p_ready=0.3)
