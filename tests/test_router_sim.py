# amaranth: UnusedElaboratable=no
"""Router unit tests in Amaranth's simulator: driver -> monitor -> model -> scoreboard.

Every input stream is driven by a :class:`Source` with seeded random gaps between wavelets,
every output (the five ports and the ``cfg`` stream) is sunk by a :class:`Sink` with seeded
random ``ready`` stalls, and each sink checks the stream rule on every cycle: once ``valid`` is
high it stays high, with the same payload, until ``ready``. What the sinks collect is compared
with :func:`router_model`, a plain function of the route table and the per-input streams.

Wavelets are made unique (a serial number in the low payload bits), so the scoreboard can tell
which input each delivered wavelet came from and catch duplicates as well as losses.

(The first line silences Amaranth's "created but never used" warning, which a constructor that
raises on a bad parameter would otherwise turn into an error under ``filterwarnings = error``.)
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from dataclasses import dataclass, field

import pytest
from amaranth.hdl import Cat
from amaranth.sim import Simulator
from sparktile.hdl.formats import (
    CFG_COLOR,
    NUM_COLORS,
    NUM_PORTS,
    PAYLOAD_BITS,
    ROUTABLE_COLORS,
    RSP_COLOR,
    WAVELET_BITS,
    CfgHeader,
    CfgOp,
    Port,
    Wavelet,
    cat_bits,
    cfg_header,
    pack,
    route_entry,
    split_bits,
    unpack,
)
from sparktile.hdl.router import Router

ALL_COLORS = (1 << NUM_COLORS) - 1
#: Output index of the ``cfg`` stream, after the five ports.
CFG_OUT = NUM_PORTS
OUT_NAMES = [p.name for p in Port] + ["cfg"]
N, E, S, W, RAMP = Port.N, Port.E, Port.S, Port.W, Port.RAMP
SEEDS = [1, 2, 3]


# ---- wavelet encoding (the Wavelet struct's bit layout) ------------------------------------

def wavelet(payload: int, color: int, ctrl: int = 0) -> int:
    return pack(Wavelet, payload=payload & ((1 << PAYLOAD_BITS) - 1), color=color, ctrl=ctrl)


def color_of(w: int) -> int:
    return unpack(Wavelet, w)["color"]


def ctrl_of(w: int) -> int:
    return unpack(Wavelet, w)["ctrl"]


def payload_of(w: int) -> int:
    return unpack(Wavelet, w)["payload"]


def describe(w: int) -> str:
    return f"(payload={payload_of(w):#010x}, color={color_of(w)}, ctrl={ctrl_of(w)})"


class Serial:
    """Unique payload tags: input index in [22:20], serial number in [19:0]."""

    def __init__(self):
        self.n = 0

    def __call__(self, src: int, hi: int = 0) -> int:
        self.n += 1
        assert self.n < (1 << 20)
        return cat_bits((self.n, 20), (int(src), 3), (0, 4), (hi, 5))


# ---- bench components ----------------------------------------------------------------------

class Source:
    """Drives one input stream: random idle gaps, holds ``valid`` and payload until ``ready``."""

    def __init__(self, items, rng: random.Random, p_valid: float):
        self.queue = deque(items)
        self.rng = rng
        self.p_valid = p_valid
        self.valid = False
        self.sent: list[int] = []

    def offer(self) -> tuple[int, int]:
        if not self.valid and self.queue and self.rng.random() < self.p_valid:
            self.valid = True
        return int(self.valid), (self.queue[0] if self.valid else 0)

    def settle(self, ready: int):
        if self.valid and ready:
            self.sent.append(self.queue.popleft())
            self.valid = False

    @property
    def done(self) -> bool:
        return not self.queue


class Sink:
    """Sinks one output stream with random ``ready`` stalls and checks the stream rule."""

    def __init__(self, name: str, rng: random.Random, p_ready: float, seed: int):
        self.name = name
        self.rng = rng
        self.p_ready = p_ready
        self.seed = seed
        self.ready = 0
        self.waiting: int | None = None     # payload offered and not taken last cycle
        self.received: list[int] = []
        self.cycles: list[int] = []

    def choose_ready(self) -> int:
        self.ready = int(self.rng.random() < self.p_ready)
        return self.ready

    def observe(self, cycle: int, valid: int, w: int):
        if self.waiting is not None:
            assert valid, (f"seed={self.seed}: {self.name}.valid dropped at cycle {cycle} "
                           f"before {describe(self.waiting)} was taken")
            assert w == self.waiting, (f"seed={self.seed}: {self.name} payload changed at cycle "
                                       f"{cycle} while waiting for ready: {describe(self.waiting)}"
                                       f" -> {describe(w)}")
        if valid and self.ready:
            self.received.append(w)
            self.cycles.append(cycle)
            self.waiting = None
        else:
            self.waiting = w if valid else None


@dataclass
class RouterRun:
    received: list[list[int]]       # per output (N, E, S, W, RAMP, cfg), in order
    receive_cycles: list[list[int]]
    sent: list[list[int]]           # per input, in the order the router took them
    forwarded: int
    route_drops: int
    cfg_drops: int
    cycles: int
    ramp_trace: list = field(default_factory=list)


def run_router(*, traffic, routes=None, col=1, last_col=False, seed=1, p_valid=0.7,
               p_ready=0.7, ramp_accept=lambda cycle: ALL_COLORS, max_cycles=6000,
               on_cycle=None, ready_fn=None, rewrites=None, fifo_depth=2,
               link_regs=False) -> RouterRun:
    """Program ``routes`` ({color: (src, dsts)}), then stream ``traffic`` ({port: [wavelet]}).

    Runs until every source is empty and no output has been valid for a few cycles.
    ``on_cycle(cycle, sources, sinks)`` is called after every cycle for extra checks;
    ``ready_fn(output, cycle)``, if given, replaces the random ``ready`` of the sinks;
    ``rewrites`` ({cycle: (color, src, dsts)}) rewrites route entries during the traffic.
    """
    dut = Router(col=col, last_col=last_col, fifo_depth=fifo_depth, link_regs=link_regs)
    rng = random.Random(seed)
    sources = [Source(traffic.get(Port(i), []), rng, p_valid) for i in range(NUM_PORTS)]
    out_streams = [*dut.outputs, dut.cfg]
    sinks = [Sink(OUT_NAMES[o], rng, p_ready, seed) for o in range(len(out_streams))]

    # One Cat per direction: one settle per cycle instead of one per signal.
    drive = Cat(*[Cat(s.valid, s.payload.as_value()) for s in dut.inputs],
                *[s.ready for s in out_streams], dut.ramp_accept)
    observe = Cat(*[Cat(s.valid, s.payload.as_value()) for s in out_streams],
                  *[s.ready for s in dut.inputs])
    rw = Cat(dut.route_write.en, dut.route_write.color, dut.route_write.entry.as_value())
    c_bits, e_bits = len(dut.route_write.color), len(dut.route_write.entry.as_value())

    def route_write(color, src, dsts):
        return cat_bits((1, 1), (color, c_bits), (route_entry(src, dsts), e_bits))
    result = {}

    async def bench(ctx):
        for color, (src, dsts) in (routes or {}).items():
            ctx.set(rw, route_write(color, src, dsts))
            await ctx.tick()
        ctx.set(rw, 0)

        cycle, quiet = 0, 0
        while True:
            fields = []
            for src in sources:
                valid, w = src.offer()
                fields += [(valid, 1), (w, WAVELET_BITS)]
            for o, sink in enumerate(sinks):
                ready = sink.choose_ready()
                if ready_fn is not None:
                    ready = sink.ready = int(ready_fn(o, cycle))
                fields.append((ready, 1))
            fields.append((ramp_accept(cycle), NUM_COLORS))
            ctx.set(drive, cat_bits(*fields))
            if rewrites and cycle in rewrites:
                color, src, dsts = rewrites[cycle]
                ctx.set(rw, route_write(color, src, dsts))
            elif rewrites and cycle - 1 in rewrites:
                ctx.set(rw, 0)

            seen = ctx.get(observe)
            any_valid = False
            fields = split_bits(seen, *[1, WAVELET_BITS] * len(sinks), *[1] * len(sources))
            for i, sink in enumerate(sinks):
                valid, w = fields[2 * i], fields[2 * i + 1]
                sink.observe(cycle, valid, w)
                any_valid |= bool(valid)
            for src, ready in zip(sources, fields[2 * len(sinks):], strict=True):
                src.settle(ready)
            await ctx.tick()
            cycle += 1
            if on_cycle is not None:
                on_cycle(cycle, sources, sinks)
            quiet = quiet + 1 if all(s.done for s in sources) and not any_valid else 0
            if quiet > 6:
                break
            assert cycle < max_cycles, (
                f"seed={seed}: no progress after {cycle} cycles; left to send per input: "
                f"{[len(s.queue) for s in sources]}")
        result.update(forwarded=ctx.get(dut.forwarded), route_drops=ctx.get(dut.route_drops),
                      cfg_drops=ctx.get(dut.cfg_drops), cycles=cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return RouterRun(received=[s.received for s in sinks],
                     receive_cycles=[s.cycles for s in sinks],
                     sent=[s.sent for s in sources], **result)


# ---- reference model -----------------------------------------------------------------------

@dataclass
class Expected:
    #: per output: {(color, input): [wavelets in order]}
    outputs: list[dict] = field(default_factory=lambda: [defaultdict(list) for _ in OUT_NAMES])
    forwarded: int = 0
    route_drops: int = 0
    cfg_drops: int = 0


def router_model(*, traffic, routes=None, col=1, last_col=False) -> Expected:
    """Where every wavelet of ``traffic`` must go, per output, per (color, input), in order."""
    routes = routes or {}
    exp = Expected()
    for port, items in traffic.items():
        target = None                    # what the last configuration header addressed
        for w in items:
            color = color_of(w)
            dsts: list[int] = []
            if color == CFG_COLOR:
                if port != W:
                    exp.cfg_drops += 1
                    continue
                if ctrl_of(w):
                    target = "mine" if unpack(CfgHeader, payload_of(w))["col"] == col \
                        else "other"
                if target == "mine":
                    dsts = [CFG_OUT]
                elif target == "other" and not last_col:
                    dsts = [E]
                else:
                    exp.cfg_drops += 1
                    continue
            elif color == RSP_COLOR:
                if port not in (W, RAMP):
                    exp.route_drops += 1
                    continue
                dsts = [E]
            else:
                src, dst = routes.get(color, (N, ()))    # reset: src 0, nothing enabled
                if src != port or not dst:
                    exp.route_drops += 1
                    continue
                dsts = sorted(set(dst))
            for o in dsts:
                exp.outputs[o][(color, int(port))].append(w)
                exp.forwarded += o in (N, E, S, W)
    return exp


def scoreboard(run: RouterRun, exp: Expected, traffic, seed: int):
    origin = {w: int(p) for p, items in traffic.items() for w in items}
    assert len(origin) == sum(len(v) for v in traffic.values()), "bench bug: duplicate wavelets"
    for i in range(NUM_PORTS):
        assert run.sent[i] == list(traffic.get(Port(i), [])), (
            f"seed={seed}: input {Port(i).name} did not take all its wavelets")
    for o, name in enumerate(OUT_NAMES):
        got = defaultdict(list)
        for w in run.received[o]:
            assert w in origin, f"seed={seed}: {name} delivered an unknown wavelet {describe(w)}"
            got[(color_of(w), origin[w])].append(w)
        want = exp.outputs[o]
        for key in sorted(set(got) | set(want)):
            g, x = got.get(key, []), want.get(key, [])
            diff = next((k for k, (a, b) in enumerate(zip(g, x, strict=False)) if a != b),
                        min(len(g), len(x)))
            assert g == x, (
                f"seed={seed}: output {name}, color {key[0]} from {Port(key[1]).name}: "
                f"got {len(g)} wavelets, expected {len(x)}; first difference at index {diff}")
    assert (run.forwarded, run.route_drops, run.cfg_drops) == \
        (exp.forwarded, exp.route_drops, exp.cfg_drops), (
        f"seed={seed}: counters (forwarded, route_drops, cfg_drops) = "
        f"{(run.forwarded, run.route_drops, run.cfg_drops)}, model says "
        f"{(exp.forwarded, exp.route_drops, exp.cfg_drops)}")


def check(traffic, routes=None, *, col=1, last_col=False, seed=1, **kw) -> RouterRun:
    """Run the bench and compare everything it saw with :func:`router_model`."""
    run = run_router(traffic=traffic, routes=routes, col=col, last_col=last_col, seed=seed, **kw)
    scoreboard(run, router_model(traffic=traffic, routes=routes, col=col, last_col=last_col),
               traffic, seed)
    return run


# ---- traffic generators --------------------------------------------------------------------

def random_setup(rng: random.Random, *, col: int, per_input: int):
    """Random route table and mixed traffic: routed, misrouted, disabled, RSP and CFG."""
    colors = rng.sample(range(ROUTABLE_COLORS), 10)
    routes = {c: (Port(rng.randrange(NUM_PORTS)),
                  [p for p in Port if rng.random() < 0.5]) for c in colors[:8]}
    # colors[8:] stay unprogrammed (disabled at reset).
    serial = Serial()
    traffic = {}
    for port in Port:
        mine = [c for c, (src, _) in routes.items() if src == port]
        items = []
        for _ in range(per_input):
            r = rng.random()
            hi = rng.randrange(32)
            if r < 0.55 and mine:
                color = rng.choice(mine)
            elif r < 0.7:
                color = rng.choice(colors)        # mostly the wrong input, or disabled
            elif r < 0.8:
                color = RSP_COLOR
            else:
                color = CFG_COLOR
            ctrl = rng.randrange(2)
            if color == CFG_COLOR and ctrl:
                hi = rng.choice([col, col, col + 1, col - 1, 31])
            items.append(wavelet(serial(port, hi), color, ctrl))
        traffic[port] = items
    return routes, traffic


# ---- tests ---------------------------------------------------------------------------------

#: (p_valid, p_ready, p_accept): source idle, sink stall and per-colour ramp gating chances.
STALLS = {"no_stall": (1.0, 1.0, 1.0), "src_gaps": (0.5, 1.0, 1.0),
          "sink_stalls": (1.0, 0.4, 1.0), "both": (0.6, 0.6, 1.0),
          "both_ramp_gated": (0.6, 0.6, 0.6)}


def random_accept(seed: int, p_accept: float, cycles: int = 6000):
    """A per-cycle ``ramp_accept`` schedule: each colour's bit set with ``p_accept``."""
    if p_accept >= 1.0:
        return lambda cycle: ALL_COLORS
    rng = random.Random(seed)
    masks = [sum(1 << c for c in range(NUM_COLORS) if rng.random() < p_accept)
             for _ in range(cycles)]
    return lambda cycle: masks[cycle % cycles]


@pytest.mark.parametrize("last_col", [False, True], ids=["mid_col", "last_col"])
@pytest.mark.parametrize("stall", list(STALLS))
@pytest.mark.parametrize("seed", SEEDS)
def test_random_traffic_matches_model(seed, stall, last_col):
    rng = random.Random(seed * 1000 + list(STALLS).index(stall) * 10 + last_col)
    routes, traffic = random_setup(rng, col=1, per_input=150)
    p_valid, p_ready, p_accept = STALLS[stall]
    check(traffic, routes, col=1, last_col=last_col, seed=seed, p_valid=p_valid,
          p_ready=p_ready, ramp_accept=random_accept(seed, p_accept))


@pytest.mark.parametrize("fifo_depth", [3, 5])
def test_random_traffic_deeper_fifos(fifo_depth):
    seed = 3
    routes, traffic = random_setup(random.Random(seed + fifo_depth), col=4, per_input=100)
    check(traffic, routes, col=4, seed=seed, p_valid=0.7, p_ready=0.5,
          fifo_depth=fifo_depth, ramp_accept=random_accept(seed, 0.7))


@pytest.mark.parametrize("offset", [1, 2])
def test_multicast_every_destination_subset(offset):
    # Colors 0..29 take masks offset..offset+29: together the two runs cover all 31 subsets.
    seed = 10 + offset
    rng = random.Random(seed)
    serial = Serial()
    routes, traffic = {}, defaultdict(list)
    for color in range(ROUTABLE_COLORS):
        mask = color + offset
        src = Port(rng.randrange(NUM_PORTS))
        routes[color] = (src, [p for p in Port if mask >> p & 1])
        traffic[src] += [wavelet(serial(src), color) for _ in range(3)]
    for items in traffic.values():
        rng.shuffle(items)
    run = check(dict(traffic), routes, seed=seed, p_valid=0.6, p_ready=0.5)
    assert run.route_drops == 0
    assert sum(len(r) for r in run.received) == 3 * sum(
        bin(c + offset).count("1") for c in range(ROUTABLE_COLORS))


def test_wrong_input_is_dropped_and_counted():
    seed = 21
    serial = Serial()
    routes = {3: (N, [E, S])}
    traffic = {p: [wavelet(serial(p), 3) for _ in range(5)] for p in Port}
    run = check(traffic, routes, seed=seed)
    assert run.route_drops == 4 * 5, f"seed={seed}"
    assert len(run.received[E]) == len(run.received[S]) == 5, f"seed={seed}"


def test_disabled_color_is_dropped_and_counted():
    seed = 22
    serial = Serial()
    # Color 4: programmed with an empty destination mask. Color 12: never programmed; its reset
    # entry names input N (src 0) with no destination, so it is disabled there too.
    routes = {4: (S, []), 5: (S, [W])}
    traffic = {S: [wavelet(serial(S), c) for c in (4, 5, 4, 5, 4)],
               N: [wavelet(serial(N), 12) for _ in range(4)]}
    run = check(traffic, routes, seed=seed)
    assert run.route_drops == 3 + 4, f"seed={seed}"
    assert [color_of(w) for w in run.received[W]] == [5, 5], f"seed={seed}"


@pytest.mark.parametrize("last_col", [False, True], ids=["mid_col", "last_col"])
def test_cfg_headers_and_data_follow_target(last_col):
    seed = 30 + last_col
    col = 1
    serial = Serial()

    def hdr(c):
        return wavelet(cfg_header(c, CfgOp.PE_REG, 0, serial(W) & 0xFFFF), CFG_COLOR, 1)

    def dat():
        return wavelet(serial(W), CFG_COLOR, 0)

    w_stream = [dat(),                       # no header yet: dropped
                hdr(col), dat(), dat(),      # to this tile
                hdr(col + 1), dat(), dat(),  # to a tile further east
                hdr(0), dat(),               # west of us (already passed): also east
                hdr(col), dat()]             # back to this tile
    traffic = {W: w_stream,
               N: [hdr(col)], RAMP: [wavelet(serial(RAMP), CFG_COLOR, 0)]}  # wrong inputs
    run = check(traffic, col=col, last_col=last_col, seed=seed)
    assert [ctrl_of(w) for w in run.received[CFG_OUT]] == [1, 0, 0, 1, 0], f"seed={seed}"
    if last_col:
        assert run.received[E] == [], f"seed={seed}"
        assert run.cfg_drops == 1 + 2 + 5, f"seed={seed}"
    else:
        assert [ctrl_of(w) for w in run.received[E]] == [1, 0, 0, 1, 0], f"seed={seed}"
        assert run.cfg_drops == 1 + 2, f"seed={seed}"
    assert run.route_drops == 0, f"seed={seed}"


def test_cfg_interleaved_with_routed_traffic_on_west():
    seed = 33
    serial = Serial()
    routes = {7: (W, [E, RAMP])}
    rng = random.Random(seed)
    items = []
    for _ in range(60):
        r = rng.random()
        if r < 0.4:
            items.append(wavelet(serial(W), 7))
        elif r < 0.6:
            items.append(wavelet(serial(W, rng.choice([1, 2])), CFG_COLOR, 1))
        else:
            items.append(wavelet(serial(W), CFG_COLOR, 0))
    check({W: items}, routes, seed=seed, p_valid=0.8, p_ready=0.5)


def test_rsp_color_goes_east_from_west_and_ramp_only():
    seed = 40
    serial = Serial()
    traffic = {p: [wavelet(serial(p), RSP_COLOR, k & 1) for k in range(6)] for p in Port}
    run = check(traffic, seed=seed, p_valid=0.7, p_ready=0.5)
    assert len(run.received[E]) == 12, f"seed={seed}"
    assert run.route_drops == 3 * 6, f"seed={seed}"


def test_rsp_color_at_last_col_still_leaves_east():
    seed = 41
    serial = Serial()
    traffic = {W: [wavelet(serial(W), RSP_COLOR) for _ in range(4)],
               RAMP: [wavelet(serial(RAMP), RSP_COLOR) for _ in range(4)]}
    run = check(traffic, last_col=True, seed=seed)
    assert len(run.received[E]) == 8, f"seed={seed}"


def test_sustained_one_wavelet_per_cycle_west_to_east():
    seed = 50
    n = 200
    serial = Serial()
    traffic = {W: [wavelet(serial(W), 9) for _ in range(n)]}
    run = check(traffic, {9: (W, [E])}, seed=seed, p_valid=1.0, p_ready=1.0)
    # Offered from cycle 0 on; one cycle through the input FIFO, then one per cycle.
    assert run.receive_cycles[E] == list(range(1, n + 1)), (
        f"seed={seed}: E transfers at cycles {run.receive_cycles[E][:5]}..., "
        f"{len(run.receive_cycles[E])} in {run.receive_cycles[E][-1]} cycles; expected 1..{n}")
    assert run.forwarded == n


def parallel_paths(n: int):
    """Three independent paths and one 3-way multicast (the ramp included), ``n`` wavelets
    each: routes and traffic."""
    serial = Serial()
    routes = {1: (W, [E]), 2: (N, [S]), 3: (E, [W]), 4: (S, [N, RAMP])}
    traffic = {src: [wavelet(serial(src), color) for _ in range(n)]
               for color, (src, _) in routes.items()}
    return routes, traffic


def test_sustained_rate_with_multicast_and_parallel_paths():
    # Three independent paths and one 3-way multicast, all at full rate.
    seed = 51
    n = 60
    routes, traffic = parallel_paths(n)
    run = check(traffic, routes, seed=seed, p_valid=1.0, p_ready=1.0)
    for o in (E, S, W, N, RAMP):
        assert run.receive_cycles[o] == list(range(1, n + 1)), (
            f"seed={seed}: {Port(o).name} did not sustain one wavelet per cycle")


@pytest.mark.parametrize("stall", ["no_stall", "both", "both_ramp_gated"])
@pytest.mark.parametrize("seed", SEEDS)
def test_link_registers_random_traffic_matches_model(seed, stall):
    # Registered mesh outputs (the FPGA configuration): same wavelets, same order, same drops,
    # and the stream rules still hold on every output.
    rng = random.Random(seed * 77 + list(STALLS).index(stall))
    routes, traffic = random_setup(rng, col=2, per_input=150)
    p_valid, p_ready, p_accept = STALLS[stall]
    check(traffic, routes, col=2, seed=seed, p_valid=p_valid, p_ready=p_ready,
          ramp_accept=random_accept(seed, p_accept), link_regs=True)


def test_link_registers_add_one_cycle_and_keep_the_rate():
    seed = 52
    n = 60
    routes, traffic = parallel_paths(n)
    run = check(traffic, routes, seed=seed, p_valid=1.0, p_ready=1.0, link_regs=True)
    for o in (E, S, W, N):
        assert run.receive_cycles[o] == list(range(2, n + 2)), (
            f"seed={seed}: {Port(o).name} at {run.receive_cycles[o][:4]}...: expected one "
            "wavelet per cycle from cycle 2 (input FIFO, then the link register)")
    assert run.receive_cycles[RAMP] == list(range(1, n + 1)), \
        f"seed={seed}: the ramp output must stay unregistered"


def test_ramp_accept_gates_one_color_without_dropping():
    seed = 60
    gated, gate_until = 7, 200
    serial = Serial()
    routes = {gated: (N, [RAMP]), 8: (E, [RAMP]), 9: (S, [RAMP, W])}
    traffic = {N: [wavelet(serial(N), gated) for _ in range(12)],
               E: [wavelet(serial(E), 8) for _ in range(25)],
               S: [wavelet(serial(S), 9) for _ in range(25)]}
    seen_n = []

    def accept(cycle):
        return ALL_COLORS & ~(1 << gated) if cycle < gate_until else ALL_COLORS

    def on_cycle(cycle, sources, sinks):
        if cycle == gate_until:
            seen_n.append(len(sources[N].sent))

    run = check(traffic, routes, seed=seed, p_valid=0.7, p_ready=0.7, ramp_accept=accept,
                on_cycle=on_cycle)
    ramp = list(zip(run.receive_cycles[RAMP], run.received[RAMP], strict=True))
    early = [w for c, w in ramp if c < gate_until]
    assert all(color_of(w) != gated for w in early), (
        f"seed={seed}: color {gated} left on the ramp while its accept bit was clear")
    assert sorted(color_of(w) for w in early) == [8] * 25 + [9] * 25, (
        f"seed={seed}: other colors did not all pass while color {gated} was gated")
    # The gated wavelets waited in the N input FIFO (two entries) and back-pressured N.
    assert seen_n == [2], f"seed={seed}: N input took {seen_n} wavelets while gated"
    assert [w for c, w in ramp if color_of(w) == gated] == traffic[N]
    assert run.route_drops == 0, f"seed={seed}"


def test_route_rewrite_while_output_waits_keeps_stream_rule():
    # W sends A, B on color 9 (W -> E); E is not ready until cycle 12, so E holds A from cycle
    # 1 on. At cycle 4 color 9 is re-routed W -> S. The stream rule obliges E to keep offering
    # A until it is taken; each wavelet must still leave exactly once.
    seed = 70
    serial = Serial()
    a, b = wavelet(serial(W), 9), wavelet(serial(W), 9)
    run = run_router(traffic={W: [a, b]}, routes={9: (W, [E])}, seed=seed, p_valid=1.0,
                     ready_fn=lambda o, cycle: o != E or cycle >= 12,
                     rewrites={4: (9, W, [S])})
    delivered = sorted(run.received[E] + run.received[S])
    assert delivered == sorted([a, b]), (
        f"seed={seed}: E got {[describe(w) for w in run.received[E]]}, "
        f"S got {[describe(w) for w in run.received[S]]}")


@pytest.mark.parametrize("kw,bad", [({"col": -1}, "-1"), ({"col": 1.5}, "1.5"),
                                    ({"col": 0, "fifo_depth": 1}, "1"),
                                    ({"col": 0, "fifo_depth": "2"}, "'2'")])
def test_bad_parameters_name_the_value(kw, bad):
    with pytest.raises(ValueError, match=rf"not {bad}$"):
        Router(last_col=False, **kw)
