"""Functional coverage points in the RTL, counted by Verilator's coverage build.

The events a verification engineer wants binned inside a tile (which FIFO level a wavelet
left at, which descriptor flags a task ran with, whether it was starved or stalled) are
internal signals the fast build does not expose. So a block built with ``cover_points``
adds a :class:`CoverPoints` submodule (``cover``) with, for every bin, one flip-flop named
``cov_<bin>`` that flips each cycle the bin's event holds. Its own module keeps the
instrumentation out of the block's code coverage (the code-coverage summary leaves
``*.cover`` modules out). In a coverage build (``build_mesh(..., coverage=True)``)
Verilator's toggle coverage counts its flips: the number of events, per module, merged over
instances and runs with the code coverage (:mod:`sparktile.cosim.sim.coverage`), with no
simulator hook and no cost in any other build (the points are not elaborated there, and
synthesis never sees them).

:data:`ROUTER_BINS` and :data:`PE_BINS` list every bin (the report lists those never hit);
:meth:`CoverPoints.add` refuses a bin that is not listed, so the lists cannot drift from the
RTL.
"""

from __future__ import annotations

import re

from amaranth.hdl import Elaboratable, Module, Signal, Value

from .formats import Port

__all__ = ["ROUTER_BINS", "PE_BINS", "ALL_RTL_BINS", "CoverPoints", "signal_name",
           "bin_of_signal", "OUT_MODES"]

_INPUTS = [p.name for p in Port]
_OUTPUTS = [p.name for p in Port] + ["CFG"]

#: What a wavelet is when it leaves an input FIFO, per input: routed by the table, a
#: configuration wavelet (only the west input takes them), a response (west and ramp), or
#: dropped (not accepted from that input).
_CLASSES = {p: ["routed", "dropped"] + (["cfg", "rsp"] if p == "W" else
                                        ["rsp"] if p == "RAMP" else [])
            for p in _INPUTS}

#: The router's bins for input FIFOs of ``depth`` entries (the tiles use 2).
ROUTER_FIFO_DEPTH = 2
ROUTER_BINS = tuple(
    [f"router:in={p},class={c},level={lv}" for p in _INPUTS for c in _CLASSES[p]
     for lv in range(1, ROUTER_FIFO_DEPTH + 1)]
    + [f"router:in={p},backpressured" for p in _INPUTS]
    # Not the ramp: the router offers the PE a wavelet only while its color's queue has room
    # (``accept``), so that output is never valid without ready.
    + [f"router:out={o},stalled" for o in _OUTPUTS if o != "RAMP"])

#: A PE pass's output: partial sums (not LAST), int8 results, int32 results.
OUT_MODES = ("partial", "int8", "int32")
_FLAGS = [(first, mode) for first in (1, 0) for mode in OUT_MODES]
PE_BINS = tuple(
    [f"pe:mac:first={f},out={o},bp={bp}" for f, o in _FLAGS for bp in ("flowing", "starved")]
    + [f"pe:reduce:first={f},out={o},bp={bp}" for f, o in _FLAGS
       for bp in ("flowing", "out_stalled") + (("psum_wait",) if f == 0 else ())]
    + [f"pe:error:{e}" for e in ("bad_descriptor", "selector_mid_vector",
                                  "data_without_descriptor", "unbound_color")])

ALL_RTL_BINS = frozenset(ROUTER_BINS + PE_BINS)


def signal_name(bin_name: str) -> str:
    """The flip-flop of a bin: ``cov_`` and the bin's name with every run of other characters
    than letters and digits as one ``_`` (``router:in=N,class=routed,level=1`` ->
    ``cov_router_in_n_class_routed_level_1``)."""
    return "cov_" + re.sub(r"[^a-z0-9]+", "_", bin_name.lower()).strip("_")


_BY_SIGNAL = {signal_name(b): b for b in ALL_RTL_BINS}
assert len(_BY_SIGNAL) == len(ALL_RTL_BINS), "two bins with one signal name"


def bin_of_signal(name: str) -> str | None:
    """The bin a coverage signal counts (``None`` for any other signal)."""
    return _BY_SIGNAL.get(name)


class CoverPoints(Elaboratable):
    """The coverage points of one block, as its ``cover`` submodule.

    Not a :class:`~amaranth.lib.wiring.Component`: its inputs are whatever signals of the
    parent the events use (Amaranth makes them ports), and it has no outputs; nothing reads
    the flip-flops but Verilator's coverage.
    """

    def __init__(self):
        self._points: list[tuple[str, Value]] = []

    def add(self, bin_name: str, event: Value) -> None:
        """Count ``event`` in bin ``bin_name`` (which must be listed)."""
        if bin_name not in ALL_RTL_BINS:
            raise ValueError(f"{bin_name!r} is not a listed coverage bin (see ROUTER_BINS, "
                             f"PE_BINS)")
        if any(b == bin_name for b, _ in self._points):
            raise ValueError(f"coverage bin {bin_name!r} added twice")
        self._points.append((bin_name, Value.cast(event)))

    def elaborate(self, platform):
        m = Module()
        for bin_name, event in self._points:
            flip = Signal(name=signal_name(bin_name))
            with m.If(event):
                m.d.sync += flip.eq(~flip)
        return m
