"""Formal proofs of the fabric's blocks, each with a mutant that must fail its proof.

``make formal`` (or ``python -m sparktile.formal``) runs every entry of :data:`PROOFS`
through SymbiYosys (:mod:`.runner`) and prints a table: the proof, its mode (bounded to a
depth, or unbounded), its time, and for each mutant the length of the counterexample that
shows the proof can fail. ``tests/test_formal.py`` runs the same entries in CI.

The specs: :mod:`.fifo` (the router's input FIFO against a naive model), :mod:`.router`
(exactly-once, routed, unmodified, in order, stream rules; each output arbiter's bound),
:mod:`.config_agent` (keeps accepting; a malformed word changes nothing), :mod:`.bridge`
(the host bridge executes nothing before its CRC passes and agrees with the protocol's frame
boundaries after any garbage) and :mod:`.requant` (the PE's requantization pipeline against
``arith.requantize``).
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


def _spec(spec: str, make: str | None = None, **kwargs) -> Callable[[], object]:
    """A builder of spec ``"module.Class"`` of this package (imported when the proof runs),
    given the design under test ``make`` (``"module.name"``, for a mutant) and ``kwargs``."""
    def build():
        import importlib

        def attr(path):
            module, name = path.rsplit(".", 1)
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return attr(spec)(**kwargs, **({"make": attr(make)} if make else {}))
    return build


def _router(checks: str, make: str | None = None):
    return _spec("router.RouterSpec", make, route_colors=1, checks={checks})


PROOFS: list[Proof] = [
    Proof("fifo", _spec("fifo.FifoSpec", depth=2), "bmc", 12, "pass",
          "bounded, 12 cycles: every state of a 2-entry FIFO (count 0..2, head 0..1) is "
          "reached within 3 and a wrong entry is visible within 2 more"),
    Proof("fifo_dropping", _spec("fifo.FifoSpec", "fifo.DroppingFifo", depth=2), "bmc", 12,
          "fail",
          "a FIFO that says ready when full and drops the write", "fifo"),
    Proof("arbiter", _spec("router.ArbiterSpec"), "bmc", 12, "pass",
          "bounded, 12 cycles: the arbiter's state (last grant, locked) is all reached in 2 "
          "cycles and a starvation needs 5 transfers to others after it"),
    Proof("arbiter_fixed_priority", _spec("router.ArbiterSpec", "router.starving_arbiter"),
          "bmc", 12, "fail",
          "a fixed-priority arbiter: input 4 starves behind input 0", "arbiter"),
    Proof("router_delivery", _router("delivery"), "bmc", 5, "pass",
          "bounded, 5 cycles: any route table and rewrite, any stalls and ramp accepts; a "
          "tagged wavelet entering behind others, waiting, multicast and leaving"),
    Proof("router_duplicating", _router("delivery", "router.DuplicatingRouter"), "bmc", 5,
          "fail", "an input that forgets which outputs took its head (a multicast leaves "
          "twice)", "router_delivery"),
    Proof("router_order", _router("order"), "bmc", 5, "pass",
          "bounded, 5 cycles: two tagged wavelets of one color from one input, any "
          "traffic and stalls around them"),
    Proof("router_lifo", _router("order", "router.ReorderingRouter"), "bmc", 5, "fail",
          "input buffers that are stacks, not FIFOs", "router_order"),
    Proof("router_stream_rules", _router("stream"), "bmc", 6, "pass",
          "bounded, 6 cycles: every output of the router, any inputs and stalls"),
    Proof("router_unlocked", _router("stream", "router.UnlockedRouter"), "bmc", 6, "fail",
          "arbiters that move while their output waits", "router_stream_rules"),
    Proof("config_agent", _spec("config_agent.ConfigAgentSpec"), "bmc", 20, "pass",
          "bounded, 20 cycles: any word sequence, malformed ones included, and response "
          "stalls; a 6-word SRAM so bursts run past its end"),
    Proof("config_agent_unchecked_route",
          _spec("config_agent.ConfigAgentSpec", "config_agent.unchecked_route_agent"),
          "bmc", 20, "fail",
          "route writes with high bits set are applied", "config_agent"),
    Proof("bridge", _spec("bridge.BridgeSpec"), "bmc", 16, "pass",
          "bounded, 16 cycles: a few garbage bytes, then any frame of up to one payload "
          "byte (or an abandoned or oversized one), and its reply up to the error code"),
    Proof("bridge_crc_ignoring", _spec("bridge.BridgeSpec", "bridge.crc_ignoring_bridge"),
          "bmc", 16, "fail", "a bridge that acts on a frame before its CRC passes", "bridge"),
    Proof("bridge_sync_losing", _spec("bridge.BridgeSpec", "bridge.sync_losing_bridge"),
          "bmc", 16, "fail", "a bridge that loses the frame behind a repeated SYNC0", "bridge"),
    Proof("requant_rounding", _spec("requant.RoundingLemma"), "prove", 1, "pass",
          "unbounded: combinational, every 48-bit product and shift 0..47"),
    Proof("requant_rounding_floor", _spec("requant.FloorRequantLemma"), "bmc", 1, "fail",
          "the formula without its rounding term", "requant_rounding"),
    Proof("requant_pipeline", _spec("requant.RequantSpec"), "bmc", 8, "pass",
          "bounded, 8 cycles: four rows in flight and output stalls up to 4 cycles; mult 1 "
          "and shift 0 (the arithmetic for all of them is requant_rounding)"),
    Proof("requant_eager_empty", _spec("requant.RequantSpec", "requant.EagerEmpty"),
          "bmc", 8, "fail",
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
