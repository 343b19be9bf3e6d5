"""Formal proofs of the fabric's blocks, each with a mutant that must fail its proof.

``make formal`` (or ``python -m sparktile.formal``) runs every entry of :data:`PROOFS`
through SymbiYosys (:mod:`.runner`) and prints a table: the proof, its mode (bounded to a
depth, or unbounded), its time, and for each mutant the length of the counterexample that
shows the proof can fail. ``tests/test_formal.py`` runs the same entries in CI.

The specs: :mod:`.fifo` (the router's input FIFO against a naive model), :mod:`.router`
(exactly-once, routed, unmodified, in order, stream rules; each output arbiter's bound),
:mod:`.config_agent` (keeps accepting; a malformed word changes nothing) and
:mod:`.requant` (the PE's requantization pipeline against ``arith.requantize``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Proof", "PROOFS", "run_all"]


@dataclass(frozen=True)
class Proof:
    """One proof (``expect="pass"``) or one mutant of it (``expect="fail"``).

    ``why`` says what the depth covers (for a bounded proof) or that a pass is unbounded.
    """

    name: str
    build: Callable[[], object]
    mode: str
    depth: int
    expect: str
    why: str
    mutant_of: str | None = None


def _fifo():
    from .fifo import FifoSpec
    return FifoSpec(depth=2)


def _fifo_dropping():
    from .fifo import DroppingFifo, FifoSpec
    return FifoSpec(depth=2, make=DroppingFifo)


def _arbiter():
    from .router import ArbiterSpec
    return ArbiterSpec()


def _arbiter_starving():
    from .router import ArbiterSpec, starving_arbiter
    return ArbiterSpec(make=starving_arbiter)


def _router(checks, make=None):
    from .router import RouterSpec
    return lambda: RouterSpec(route_colors=1, checks={checks},
                              **({"make": make()} if make else {}))


def _mutant(name):
    def make():
        from . import router
        return getattr(router, name)
    return make


def _config_agent():
    from .config_agent import ConfigAgentSpec
    return ConfigAgentSpec()


def _config_agent_unchecked():
    from .config_agent import ConfigAgentSpec, unchecked_route_agent
    return ConfigAgentSpec(make=unchecked_route_agent)


def _rounding():
    from .requant import RoundingLemma
    return RoundingLemma()


def _rounding_floor():
    from .requant import FloorRequantLemma
    return FloorRequantLemma()


def _requant():
    from .requant import RequantSpec
    return RequantSpec()


def _requant_eager():
    from .requant import EagerEmpty, RequantSpec
    return RequantSpec(make=EagerEmpty)


PROOFS: list[Proof] = [
    Proof("fifo", _fifo, "bmc", 12, "pass",
          "bounded, 12 cycles: every state of a 2-entry FIFO (count 0..2, head 0..1) is "
          "reached within 3 and a wrong entry is visible within 2 more"),
    Proof("fifo_dropping", _fifo_dropping, "bmc", 12, "fail",
          "a FIFO that says ready when full and drops the write", "fifo"),
    Proof("arbiter", _arbiter, "bmc", 12, "pass",
          "bounded, 12 cycles: the arbiter's state (last grant, locked) is all reached in 2 "
          "cycles and a starvation needs 5 transfers to others after it"),
    Proof("arbiter_fixed_priority", _arbiter_starving, "bmc", 12, "fail",
          "a fixed-priority arbiter: input 4 starves behind input 0", "arbiter"),
    Proof("router_delivery", _router("delivery"), "bmc", 5, "pass",
          "bounded, 5 cycles: any route table and rewrite, any stalls and ramp accepts; a "
          "tagged wavelet entering behind others, waiting, multicast and leaving"),
    Proof("router_duplicating", _router("delivery", _mutant("DuplicatingRouter")), "bmc", 5,
          "fail", "an input that forgets which outputs took its head (a multicast leaves "
          "twice)", "router_delivery"),
    Proof("router_order", _router("order"), "bmc", 5, "pass",
          "bounded, 5 cycles: two tagged wavelets of one color from one input, any "
          "traffic and stalls around them"),
    Proof("router_lifo", _router("order", _mutant("ReorderingRouter")), "bmc", 5, "fail",
          "input buffers that are stacks, not FIFOs", "router_order"),
    Proof("router_stream_rules", _router("stream"), "bmc", 6, "pass",
          "bounded, 6 cycles: every output of the router, any inputs and stalls"),
    Proof("router_unlocked", _router("stream", _mutant("UnlockedRouter")), "bmc", 6, "fail",
          "arbiters that move while their output waits", "router_stream_rules"),
    Proof("config_agent", _config_agent, "bmc", 20, "pass",
          "bounded, 20 cycles: any word sequence, malformed ones included, and response "
          "stalls; a 6-word SRAM so bursts run past its end"),
    Proof("config_agent_unchecked_route", _config_agent_unchecked, "bmc", 20, "fail",
          "route writes with high bits set are applied", "config_agent"),
    Proof("requant_rounding", _rounding, "prove", 1, "pass",
          "unbounded: combinational, every 48-bit product and shift 0..47"),
    Proof("requant_rounding_floor", _rounding_floor, "bmc", 1, "fail",
          "the formula without its rounding term", "requant_rounding"),
    Proof("requant_pipeline", _requant, "bmc", 8, "pass",
          "bounded, 8 cycles: four rows in flight and output stalls up to 4 cycles; mult 1 "
          "and shift 0 (the arithmetic for all of them is requant_rounding)"),
    Proof("requant_eager_empty", _requant_eager, "bmc", 8, "fail",
          "'empty' while the last stage still holds a row (int32 results could overtake)",
          "requant_pipeline"),
]


def run_all(names=None, *, echo=print, keep=None) -> list:
    """Run the proofs named (all by default); returns their :class:`~.runner.ProofResult`
    paired with the entry, and echoes one table line each."""
    from .runner import prove

    chosen = [p for p in PROOFS if names is None or p.name in names]
    out = []
    echo(f"{'proof':<30} {'mode':<6} {'depth':>5} {'expect':<6} {'got':<7} {'time':>7}  "
         f"{'trace':>5}  what")
    for p in chosen:
        r = prove(p.build(), name=p.name, mode=p.mode, depth=p.depth, keep=keep)
        trace = f"{r.trace_cycles}" if r.trace_cycles else "-"
        echo(f"{p.name:<30} {p.mode:<6} {p.depth:>5} {p.expect:<6} {r.status:<7} "
             f"{r.seconds:>6.1f}s  {trace:>5}  {p.why}")
        out.append((p, r))
    return out
