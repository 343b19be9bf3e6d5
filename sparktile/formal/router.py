"""The router delivers every routed wavelet exactly where its route says, once, in order.

The design under test is one :class:`~sparktile.hdl.router.Router` with every input, every
output's ``ready``, the ramp's per-color ``accept`` and the route-table write port free: any
route table, rewritten at any time, and any stall pattern on every output. The spec follows
two wavelets chosen by the solver (*the two-arbitrary-values technique*): ``A`` and, later,
``B``, both on a routed color, recognised by payloads (``tag_a``, ``tag_b``, free but fixed)
that no other wavelet carries. Its naive model of the route table computes, as each enters,
the outputs its route sends it to. Asserted every cycle:

* **exactly where the route says, once, unmodified**: ``A`` leaves no output outside its
  route's mask, leaves each output at most once, and leaves as it entered (payload, color,
  ctrl);
* **in order**: when ``B`` came in on ``A``'s input with ``A``'s color, no output gives ``B``
  before ``A``;
* **Amaranth's stream rules** on all six outputs (the five ports and the configuration
  stream): once ``valid`` is up without ``ready``, it stays up and the payload does not
  change until the transfer.

The bound on waiting is a property of each output's arbiter
(:class:`~sparktile.hdl.router.OutputArbiter`), proved on its own by :class:`ArbiterSpec`
(unbounded, by induction): an input that keeps requesting is granted before the output has
made ``n`` transfers to others, and a locked output keeps its choice. With the input FIFO's
depth 2, a wavelet therefore waits at most for the one ahead of it and ``n - 1`` others per
output.

Mutants: :func:`DuplicatingRouter` (an input forgets which outputs took its head, so a
multicast can leave an output twice) fails exactly-once; :func:`ReorderingRouter` (input
stacks instead of FIFOs) fails the order; :func:`UnlockedRouter` (arbiters that move while
the output waits) fails the stream rules; a fixed-priority arbiter
(:func:`starving_arbiter`) fails the arbiter's bound.
"""

from __future__ import annotations

from amaranth.hdl import Array, Assert, Assume, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..hdl.formats import NUM_COLORS, NUM_PORTS, ROUTABLE_COLORS, RouteEntry, Wavelet
from ..hdl.router import _NUM_OUTS, OutputArbiter, Router
from .fifo import fifo_ports

__all__ = ["RouterSpec", "ArbiterSpec", "DuplicatingRouter", "ReorderingRouter",
           "UnlockedRouter", "starving_arbiter"]


class RouterSpec(wiring.Component):
    """Safety of one router: exactly-once, where routed, unmodified, in order, stream rules.

    Parameters
    ----------
    route_colors : int
        Route-table entries of the router under test (fewer keep the solver fast; the
        logic is the same for every entry).
    make : callable
        Builds the router (``make(col=, last_col=, route_colors=)``), for the mutants.
    checks : set of str
        Which properties to assert: ``"delivery"`` (A: exactly once, routed, unmodified),
        ``"order"`` (B never before A) and ``"stream"`` (the stream rules). One proof per
        property keeps each solver run's cone of logic small.
    """

    CHECKS = ("delivery", "order", "stream")

    def __init__(self, *, route_colors: int = 2, make=Router, checks=CHECKS):
        unknown = set(checks) - set(self.CHECKS)
        if unknown or not checks:
            raise ValueError(f"checks must be a non-empty subset of {self.CHECKS}, "
                             f"not {sorted(checks)}")
        self.route_colors, self.make, self.checks = route_colors, make, frozenset(checks)
        super().__init__({
            "in_valid": In(NUM_PORTS), "in_payload": In(Wavelet).array(NUM_PORTS),
            "out_ready": In(_NUM_OUTS), "ramp_accept": In(NUM_COLORS),
            "rw_en": In(1), "rw_color": In(range(ROUTABLE_COLORS)), "rw_entry": In(RouteEntry),
            "pick_a": In(1), "pick_b": In(1), "tag_a": In(32), "tag_b": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.make(col=0, last_col=False,
                                           route_colors=self.route_colors)
        m.d.comb += [Assume(~ResetSignal()), Assume(self.rw_color < self.route_colors)]
        for i in range(NUM_PORTS):
            m.d.comb += [dut.inputs[i].valid.eq(self.in_valid[i]),
                         dut.inputs[i].payload.eq(self.in_payload[i])]
        outs = [*dut.outputs, dut.cfg]
        for o, out in enumerate(outs):
            m.d.comb += out.ready.eq(self.out_ready[o])
        m.d.comb += [dut.ramp_accept.eq(self.ramp_accept),
                     dut.route_write.en.eq(self.rw_en),
                     dut.route_write.color.eq(self.rw_color),
                     dut.route_write.entry.eq(self.rw_entry)]

        # The tags are fixed for the whole run.
        first = Signal(init=1)
        m.d.sync += first.eq(0)
        tags = Signal(64)
        m.d.sync += tags.eq(self.tag_a | (self.tag_b << 32))
        with m.If(~first):
            m.d.comb += Assume((self.tag_a | (self.tag_b << 32)) == tags)
        m.d.comb += Assume(self.tag_a != self.tag_b)

        # The naive route table.
        table = Array(Signal(RouteEntry, name=f"model_route_{c}")
                      for c in range(self.route_colors))
        with m.If(self.rw_en):
            m.d.sync += table[self.rw_color].eq(self.rw_entry)

        def route_mask(i, w):
            entry = table[w.color]
            routed = (w.color < self.route_colors) & (entry.src == i)
            return routed, entry.dst

        trackers = {}
        tracked = [("a", self.tag_a, self.pick_a)]
        if "order" in self.checks:
            tracked.append(("b", self.tag_b, self.pick_b))
        for name, tag, pick in tracked if self.checks - {"stream"} else []:
            seen = Signal(name=f"{name}_seen")
            port = Signal(range(NUM_PORTS), name=f"{name}_port")
            wavelet = Signal(Wavelet, name=f"{name}_wavelet")
            mask = Signal(NUM_PORTS, name=f"{name}_mask")
            left = [Signal(2, name=f"{name}_left_{o}") for o in range(NUM_PORTS)]
            trackers[name] = (seen, port, wavelet, mask, left)
            for i in range(NUM_PORTS):
                w = dut.inputs[i].payload
                accepted = dut.inputs[i].valid & dut.inputs[i].ready
                carries = accepted & (w.payload == tag)
                # The tag is on at most one wavelet, the chosen one: a routed one, taken
                # when ``pick`` says so.
                m.d.comb += Assume(~(carries & (seen | ~pick)))
                with m.If(carries):
                    routed, dst = route_mask(i, w)
                    m.d.comb += Assume(routed & (dst != 0))
                    m.d.sync += [seen.eq(1), port.eq(i), wavelet.eq(w), mask.eq(dst)]
                for j in range(i):
                    m.d.comb += Assume(~(carries & dut.inputs[j].valid & dut.inputs[j].ready
                                         & (dut.inputs[j].payload.payload == tag)))
            for o in range(NUM_PORTS):
                out = outs[o]
                gives = out.valid & out.ready & (out.payload.payload == tag)
                with m.If(gives & (left[o] < 3)):
                    m.d.sync += left[o].eq(left[o] + 1)
                if "delivery" in self.checks and name == "a":
                    with m.If(gives):
                        m.d.comb += [
                            Assert(seen, "a tagged wavelet leaves only after it entered"),
                            Assert(mask.bit_select(o, 1), "it leaves only its route's outputs"),
                            Assert(out.payload == wavelet, "it leaves unmodified"),
                        ]
                    m.d.comb += Assert(left[o] <= 1, "it leaves each output at most once")
            if "delivery" in self.checks and name == "a":
                # The configuration stream never carries a routed wavelet.
                with m.If(dut.cfg.valid & (dut.cfg.payload.payload == tag)):
                    m.d.comb += Assert(~seen)

        if "order" in self.checks:
            # B behind A on the same input with the same color: never before A on an output
            # of A's route (a route rewritten between the two may send B elsewhere).
            a_seen, a_port, a_w, a_mask, a_left = trackers["a"]
            b_seen, b_port, b_w, _, b_left = trackers["b"]
            for i in range(NUM_PORTS):
                w = dut.inputs[i].payload
                with m.If(dut.inputs[i].valid & dut.inputs[i].ready
                          & (w.payload == self.tag_b)):
                    m.d.comb += Assume(a_seen)      # B comes after A
            b_behind = Signal()
            m.d.comb += b_behind.eq(b_seen & (b_port == a_port) & (b_w.color == a_w.color))
            for o in range(NUM_PORTS):
                with m.If(b_behind & a_mask.bit_select(o, 1) & (b_left[o] != 0)):
                    m.d.comb += Assert(a_left[o] != 0, "same input, same color: in order")

        # Stream rules on every output.
        for o, out in enumerate(outs if "stream" in self.checks else []):
            waiting = Signal(name=f"waiting_{o}")
            held = Signal(Wavelet, name=f"held_{o}")
            m.d.sync += [waiting.eq(out.valid & ~out.ready), held.eq(out.payload)]
            with m.If(waiting):
                m.d.comb += [Assert(out.valid, "valid stays up until the transfer"),
                             Assert(out.payload == held, "the payload holds while waiting")]
        return m


class ArbiterSpec(wiring.Component):
    """One output arbiter of ``n`` requesters; free: the requests and the output's ready.

    Assumed: a request, once up, stays up until it is granted (the router's offers do:
    an input's head waits for every output it wants). Asserted: no requester sees ``n``
    transfers to others while it waits; a fresh grant goes to a requester; a locked output
    keeps ``valid`` and its choice until the transfer.
    """

    def __init__(self, n: int = NUM_PORTS, make=OutputArbiter):
        self.n, self.make = n, make
        super().__init__({"requests": In(n), "ready": In(1)})

    def elaborate(self, platform):
        m = Module()
        n = self.n
        m.submodules.dut = dut = self.make(n)
        m.d.comb += [dut.requests.eq(self.requests), dut.ready.eq(self.ready)]
        transfer = dut.valid & dut.ready
        waiting = Signal()
        held = Signal(range(n))
        m.d.sync += [waiting.eq(dut.valid & ~dut.ready), held.eq(dut.choice)]
        with m.If(waiting):
            m.d.comb += [Assert(dut.valid, "a waiting output stays valid"),
                         Assert(dut.choice == held, "a waiting output keeps its choice")]
        with m.Elif(dut.valid):
            m.d.comb += Assert(self.requests.bit_select(dut.choice, 1),
                               "a fresh grant goes to a requester")
        for i in range(n):
            granted = transfer & (dut.choice == i)
            asked = Signal(name=f"asked_{i}")
            others = Signal(range(n + 1), name=f"others_{i}")
            with m.If(asked & ~granted):
                m.d.comb += Assume(self.requests[i])
            with m.If(granted):
                m.d.sync += [asked.eq(0), others.eq(0)]
            with m.Elif(self.requests[i]):
                m.d.sync += asked.eq(1)
                with m.If(transfer & (others < n)):
                    m.d.sync += others.eq(others + 1)
            m.d.comb += Assert(others < n, "granted before n transfers to others")
        return m


def starving_arbiter(n: int):
    """Mutant: a fixed-priority arbiter (the lowest-numbered requester always wins)."""
    from .mutants import mutate
    module = mutate("sparktile.hdl.router",
                    "any_req, rr = round_robin(m, self.requests, last, self._n)",
                    "any_req, rr = round_robin(m, self.requests, Const(self._n - 1), self._n)",
                    tag="fixed_priority")
    return module.OutputArbiter(n)


def _duplicating_router():
    from .mutants import mutate
    return mutate("sparktile.hdl.router",
                  "m.d.sync += sent[i].eq(done)",
                  "m.d.sync += sent[i].eq(sent[i])",
                  tag="forgets_sent").Router


class LifoBuffer(wiring.Component):
    """A two-entry stack with the FIFO's ports (for the reordering mutant)."""

    def __init__(self, *, width: int, depth: int):
        self.width, self.depth = width, depth
        super().__init__(fifo_ports(width, depth))

    def elaborate(self, platform):
        m = Module()
        stack = Array(Signal(self.width, name=f"slot_{k}") for k in range(self.depth))
        level = self.level
        top = Signal(range(self.depth))
        m.d.comb += [top.eq(level - 1), self.w_rdy.eq(level < self.depth),
                     self.r_rdy.eq(level > 0), self.r_data.eq(stack[top])]
        write = self.w_en & self.w_rdy
        read = self.r_en & self.r_rdy
        with m.If(write & ~read):
            m.d.sync += [stack[level].eq(self.w_data), level.eq(level + 1)]
        with m.Elif(read & ~write):
            m.d.sync += level.eq(level - 1)
        with m.Elif(read & write):
            m.d.sync += stack[top].eq(self.w_data)
        return m


def ReorderingRouter(**kwargs):
    """Mutant: input buffers that give the newest wavelet first (a stack, not a FIFO)."""
    from .mutants import mutate
    module = mutate("sparktile.hdl.router",
                    "q = fifo.SyncFIFO(width=wl + _NUM_OUTS + 2, depth=self._fifo_depth)",
                    "q = LifoBuffer(width=wl + _NUM_OUTS + 2, depth=self._fifo_depth)",
                    tag="lifo")
    module.LifoBuffer = LifoBuffer
    return module.Router(**kwargs)


def UnlockedRouter(**kwargs):
    """Mutant: arbiters that do not hold their choice while the output waits, so a
    waiting output's payload can change (Amaranth's stream rules broken)."""
    from .mutants import mutate
    module = mutate("sparktile.hdl.router",
                    "m.d.sync += [last.eq(self.choice), locked.eq(~self.ready)]",
                    "m.d.sync += [last.eq(self.choice), locked.eq(0)]",
                    tag="unlocked")
    return module.Router(**kwargs)


def DuplicatingRouter(**kwargs):
    """Mutant: an input forgets which outputs already took its head, so a multicast head
    is offered again to an output that took it."""
    return _duplicating_router()(**kwargs)
