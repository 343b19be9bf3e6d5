"""Formal proofs (SymbiYosys from PyPI, the 'formal' extra): every proof of
sparktile.formal.PROOFS holds, and every mutant fails its proof with a counterexample.

`make formal` runs the same entries and prints the table with times and trace lengths.
"""

import pytest

from sparktile.formal import PROOFS
from sparktile.formal.mutants import MutationError, mutate
from sparktile.formal.runner import prove, tools_missing

needs_tools = pytest.mark.skipif(bool(tools_missing()),
                                 reason=f"formal tools missing: pip install -e '.[formal]' "
                                        f"({', '.join(tools_missing())})")


@needs_tools
@pytest.mark.parametrize("proof", PROOFS, ids=[p.name for p in PROOFS])
def test_proof_gives_its_expected_verdict(proof, tmp_path):
    r = prove(proof.build(), name=proof.name, mode=proof.mode, depth=proof.depth,
              keep=tmp_path)
    assert r.status == proof.expect, f"{proof.name}: {r.status}\n{r.log_tail}"
    if proof.expect == "fail":
        # A mutant's failure is a real counterexample, with a trace to look at.
        assert r.trace_cycles and r.trace_cycles >= 1, r.log_tail
        assert r.trace and r.trace.endswith(".vcd")


def test_every_proof_has_a_mutant_and_every_mutant_a_proof():
    passes = {p.name for p in PROOFS if p.expect == "pass"}
    mutants = [p for p in PROOFS if p.expect == "fail"]
    assert {m.mutant_of for m in mutants} == passes
    for m in mutants:
        proof = next(p for p in PROOFS if p.name == m.mutant_of)
        assert (m.mode, m.depth) == (proof.mode, proof.depth) or proof.mode == "prove"


def test_a_mutation_of_a_piece_that_is_not_in_the_source_is_refused():
    with pytest.raises(MutationError, match="occurs 0 times"):
        mutate("sparktile.hdl.router", "this text is not in the router", "x", tag="t")


def test_the_mutants_compile_from_the_current_rtl():
    # If the RTL changes so that a mutant's piece disappears, this names the mutant.
    from amaranth.hdl import Fragment

    from sparktile.formal.router import (
        DuplicatingRouter,
        ReorderingRouter,
        UnlockedRouter,
        starving_arbiter,
    )
    for make in (DuplicatingRouter, ReorderingRouter, UnlockedRouter):
        Fragment.get(make(col=0, last_col=False), None)
    Fragment.get(starving_arbiter(5), None)
    from sparktile.formal.config_agent import unchecked_route_agent
    Fragment.get(unchecked_route_agent(col=0, sram_words=8), None)
    from sparktile.formal.bridge import BRIDGE_ARGS, crc_ignoring_bridge, sync_losing_bridge
    for make in (crc_ignoring_bridge, sync_losing_bridge):
        Fragment.get(make(**BRIDGE_ARGS), None)


def test_the_bridge_specs_crc_is_the_protocols():
    # The bridge spec computes the frame CRC with its own shift register; it must be
    # CRC-16/CCITT-FALSE as protocol.crc16 (and the host driver) compute it.
    import random

    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator
    from sparktile.hdl.fpga.protocol import crc16

    from sparktile.formal.bridge import crc16_step

    m = Module()
    state, byte = Signal(16), Signal(8)
    out = crc16_step(m, state, byte)
    rng = random.Random(7)
    frames = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
              for _ in range(40)] + [b"\x00", b"\xff" * 5]

    async def bench(ctx):
        for frame in frames:
            crc = 0xFFFF
            for b in frame:
                ctx.set(state, crc)
                ctx.set(byte, b)
                crc = ctx.get(out)
            assert crc == crc16(frame), f"{frame.hex()}: {crc:#06x} != {crc16(frame):#06x}"

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
