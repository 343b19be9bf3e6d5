"""Fabric benches: random multicast traffic with a scoreboard, latency, throughput, bad config.

Routes are dimension-ordered multicast trees (along the source's row first, then along
columns), the same discipline the mapping compiler uses, so the channel-dependency graph is
acyclic and the fabric cannot deadlock (see ``docs/architecture.md``).

Each bench is an async function taking a :class:`~sparktile.cosim.sim.fabric.Fabric`; run them with
:func:`sparktile.cosim.sim.session.run_job`. Structure: the *driver* queues wavelets on the source
BFMs, the *monitor* is the sink BFMs' queues, the *model* is the route trees (which ports must
see which wavelets, in which order), and :class:`Scoreboard` compares.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ...compiler.program import ConfigProgram
from ...compiler.routes import OPPOSITE, STEP, program_from_entries, trace_flows
from ...hdl.formats import (
    CC_COLOR,
    CFG_COLOR,
    ROUTABLE_COLORS,
    CfgOp,
    Counter,
    Port,
    ReadAddress,
    RouteEntry,
    cc,
    cfg_header,
    pack,
    route_entry,
    width_of,
)
from ...hdl.mesh import MeshShape
from ..sim.fabric import STATUS, Fabric
from ..sim.harness import EdgePort, edge_ports
from ..sim.registry import BenchResult, bench
from . import coverage_bins

__all__ = ["Flow", "random_flows", "xy_routes", "Scoreboard", "stress", "latency", "throughput",
           "bad_config", "stray_wavelets"]

_SIDE_PORT = {"N": Port.N, "E": Port.E, "S": Port.S, "W": Port.W}


@dataclass
class Flow:
    """Wavelets of one color from one edge port to a set of edge ports."""

    color: int
    src: EdgePort
    dsts: list[EdgePort]
    ids: list[int] = field(default_factory=list)


def xy_routes(shape: MeshShape, src: EdgePort, dsts) -> dict[tuple[int, int], tuple[Port, set]]:
    """Per tile, ``(input, outputs)`` of the row-first multicast tree from ``src`` to ``dsts``."""
    tiles: dict[tuple[int, int], tuple[Port, set]] = {}

    def visit(rc, inp, out):
        if rc in tiles:
            assert tiles[rc][0] == inp, "an XY tree enters each tile from one side"
            tiles[rc][1].add(out)
        else:
            tiles[rc] = (inp, {out})

    r0, c0 = src.tile(shape)
    for dst in dsts:
        r1, c1 = dst.tile(shape)
        r, c, inp = r0, c0, _SIDE_PORT[src.side]
        moves = [Port.E if c1 > c0 else Port.W] * abs(c1 - c0) + \
                [Port.S if r1 > r0 else Port.N] * abs(r1 - r0)
        for mv in moves:
            visit((r, c), inp, mv)
            dr, dc = STEP[mv]
            r, c, inp = r + dr, c + dc, OPPOSITE[mv]
        visit((r, c), inp, _SIDE_PORT[dst.side])
    return tiles


def random_flows(shape: MeshShape, rng: np.random.Generator, n_flows: int = ROUTABLE_COLORS,
                 max_fanout: int = 3) -> list[Flow]:
    ports = edge_ports(shape)
    flows = []
    for color in range(min(n_flows, ROUTABLE_COLORS)):
        src = ports[rng.integers(len(ports))]
        k = int(rng.integers(1, max_fanout + 1))
        idx = rng.choice(len(ports), size=min(k, len(ports)), replace=False)
        flows.append(Flow(color, src, [ports[i] for i in sorted(idx)]))
    return flows


def program_flows(shape: MeshShape, flows) -> ConfigProgram:
    prog = ConfigProgram(shape)
    for f in flows:
        for (r, c), (inp, outs) in xy_routes(shape, f.src, f.dsts).items():
            prog.add_route(r, c, f.color, inp, outs)
    return prog


class Scoreboard:
    """In-order, exactly-once check per (destination port, color)."""

    def __init__(self):
        self.expected: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.received: dict[tuple[int, int], list[int]] = defaultdict(list)

    def expect(self, port: int, color: int, ids) -> None:
        self.expected[port, color].extend(int(i) for i in ids)

    def observe(self, port: int, payloads, ccs) -> None:
        for p, c in zip(payloads.tolist(), ccs.tolist(), strict=True):
            self.received[port, c & CC_COLOR].append(p)

    def report(self) -> dict:
        lost = dup = ooo = spurious = 0
        first_error = None
        for key in set(self.expected) | set(self.received):
            exp = self.expected.get(key, [])
            got = self.received.get(key, [])
            pos = {v: i for i, v in enumerate(exp)}
            seen = set()
            last = -1
            for v in got:
                if v not in pos:
                    spurious += 1
                    first_error = first_error or f"port {key[0]} color {key[1]}: unexpected {v}"
                elif v in seen:
                    dup += 1
                    first_error = first_error or f"port {key[0]} color {key[1]}: {v} twice"
                else:
                    if pos[v] < last:
                        ooo += 1
                        first_error = first_error or \
                            f"port {key[0]} color {key[1]}: {v} arrived after a later wavelet"
                    last = max(last, pos[v])
                    seen.add(v)
            missing = len(exp) - len(seen)
            if missing:
                lost += missing
                first_error = first_error or f"port {key[0]} color {key[1]}: {missing} missing"
        return {"lost": lost, "duplicated": dup + spurious, "out_of_order": ooo,
                "first_error": first_error}


@dataclass
class StressResult(BenchResult):
    """Random multicast traffic, judged by the :class:`Scoreboard`.

    ``lost``/``duplicated``/``out_of_order`` count deliveries against the routes;
    ``first_error`` names the first port and color that went wrong. ``link_utilization`` is
    the routers' own ``forwarded`` counters over (4 links x PEs x cycles).
    """

    mesh: str
    seed: int
    flows: int
    sent: int
    expected_deliveries: int
    delivered: int
    lost: int
    duplicated: int
    out_of_order: int
    first_error: str | None
    status: str
    cycles: int
    config_cycles: int
    link_utilization: float
    route_drops: int
    cfg_errors: int
    sim_cycles_per_s: float
    #: Functional coverage bins hit, with counts (:mod:`.coverage_bins`).
    coverage: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """The run completed and every wavelet arrived exactly once, in order per color."""
        return not (self.lost or self.duplicated or self.out_of_order) and \
            self.status == "complete"


@dataclass
class LatencyResult(BenchResult):
    """``samples``: one ``{"hops", "latency", "ok"}`` per straight path."""

    samples: list


@dataclass
class ThroughputResult(BenchResult):
    """``streams``: one ``{"flow", "wavelets", "span_cycles", "wavelets_per_cycle",
    "in_order"}`` per row and column stream."""

    status: str
    streams: list


@dataclass
class BadConfigResult(BenchResult):
    """Malformed configuration wavelets sent, counted (``cfg_errors``) and the fabric after."""

    sent_malformed: int
    counted: int
    cases: list
    per_tile: list
    stress_after: dict


@bench(StressResult)
async def stress(fabric: Fabric, wavelets: int = 2000, seed: int = 1, max_stall: float = 0.5,
                 n_flows: int = ROUTABLE_COLORS, routes: list | None = None) -> StressResult:
    """Random traffic on random multicast routes with random stalls on every edge stream.

    ``routes`` (entries of a route file, :mod:`sparktile.compiler.routes`) replaces the
    random XY routes: the traffic then follows the flows those routes make, from the edge
    where each color enters to every edge it reaches.
    """
    shape = fabric.shape
    rng = np.random.default_rng(seed)
    if routes is None:
        flows = random_flows(shape, rng, n_flows)
        program = program_flows(shape, flows)
    else:
        program = program_from_entries(shape, routes)
        ports = {(p.side, p.pos): p for p in edge_ports(shape)}
        flows = [Flow(color, ports[src], [ports[d] for d in dsts])
                 for color, src, dsts in trace_flows(program)]
    cfg_cycles = await fabric.configure(program)
    before = await fabric.read_counters((Counter.FORWARDED,))

    # Driver: interleave flows per source port, keeping each flow's order.
    which = rng.integers(len(flows), size=wavelets)
    per_port: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    board = Scoreboard()
    for wid, fi in enumerate(which.tolist()):
        f = flows[fi]
        payload = wid
        f.ids.append(payload)
        per_port[f.src.index].append((payload, f.color, int(rng.integers(2))))
    for f in flows:
        for d in f.dsts:
            board.expect(d.index, f.color, f.ids)
    for port, items in per_port.items():
        arr = np.array(items, dtype=np.uint64)
        fabric.send(port, arr[:, 0], [cc(int(c), int(k)) for c, k in arr[:, 1:]])
    pauses = {}
    for p in fabric.ports:
        pauses[p.index] = (float(rng.uniform(0, max_stall)), float(rng.uniform(0, max_stall)))
        fabric.set_pauses(p.index, *pauses[p.index])
    expect = sum(len(f.ids) * len(f.dsts) for f in flows)

    t0 = time.perf_counter()
    result = await fabric.run(expect, idle_limit=20_000)
    wall = time.perf_counter() - t0
    for p in fabric.ports:
        fabric.set_pauses(p.index, 0.0, 0.0)
        pay, ccs, _ = fabric.receive(p.index)
        board.observe(p.index, pay, ccs)
    after = await fabric.read_counters((Counter.FORWARDED, Counter.ROUTE_DROPS,
                                        Counter.CFG_ERRORS))
    # Counter reads happen before and after the measured window, so the difference counts
    # the traffic's own link transfers only.
    forwarded = int(fabric.counter_delta(after, before)["forwarded"].sum())
    links = 4 * shape.pes
    report = board.report()
    if routes is None:
        def routes_of(f):
            return xy_routes(shape, f.src, f.dsts)
    else:
        def routes_of(f):     # a route file's color: all of its entries
            return {tile: (e[f.color].src, e[f.color].dst)
                    for tile, e in program.routes.items() if f.color in e}
    bins = coverage_bins.merge_bins(coverage_bins.hop_bins(shape, flows, routes_of),
                                    coverage_bins.stall_bins(flows, pauses))
    return StressResult(
        mesh=str(shape), seed=seed, flows=len(flows),
        sent=int(wavelets), expected_deliveries=expect,
        delivered=int(sum(len(v) for v in board.received.values())),
        **report,
        status=STATUS[result.status],
        cycles=result.cycles, config_cycles=cfg_cycles,
        link_utilization=forwarded / (links * max(result.cycles, 1)),
        route_drops=int(after["route_drops"].sum()),
        cfg_errors=int(after["cfg_errors"].sum()),
        sim_cycles_per_s=result.cycles / wall if wall > 0 else 0.0,
        coverage=dict(bins),
    )


@bench(LatencyResult)
async def latency(fabric: Fabric) -> LatencyResult:
    """Latency of single wavelets over straight paths of every length the mesh offers."""
    shape = fabric.shape
    ports = {(p.side, p.pos): p for p in fabric.ports}
    flows = []
    color = 0
    for r in range(shape.rows):
        flows.append(Flow(color, ports["W", r], [ports["E", r]]))
        color += 1
    for c in range(shape.cols):
        for src, dst in ((ports["N", c], ports["S", c]), (ports["W", 0], ports["S", c])):
            if color < ROUTABLE_COLORS:
                flows.append(Flow(color, src, [dst]))
                color += 1
    await fabric.configure(program_flows(shape, flows))
    samples = []
    for f in flows[:ROUTABLE_COLORS]:
        fabric.send(f.src.index, [0xA5A5], [cc(f.color)])
        res = await fabric.run(1)
        taken = fabric.taken(f.src.index)
        _, _, t = fabric.receive(f.dsts[0].index)
        hops = len(xy_routes(shape, f.src, f.dsts))
        samples.append({"hops": hops, "latency": int(t[0] - taken[-1]), "ok": res.ok})
    return LatencyResult(samples=samples)


@bench(ThroughputResult)
async def throughput(fabric: Fabric, wavelets: int = 1000) -> ThroughputResult:
    """Every row streams west to east and every column north to south, all at once."""
    shape = fabric.shape
    ports = {(p.side, p.pos): p for p in fabric.ports}
    flows = [Flow(r, ports["W", r], [ports["E", r]]) for r in range(shape.rows)]
    flows += [Flow(shape.rows + c, ports["N", c], [ports["S", c]])
              for c in range(shape.cols) if shape.rows + c < ROUTABLE_COLORS]
    await fabric.configure(program_flows(shape, flows))
    for f in flows:
        fabric.send(f.src.index, np.arange(wavelets), [cc(f.color)] * wavelets)
    res = await fabric.run(wavelets * len(flows))
    rates = []
    for f in flows:
        p, _, t = fabric.receive(f.dsts[0].index)
        in_order = bool(np.array_equal(p, np.arange(wavelets)))
        span = int(t[-1] - t[0]) + 1
        rates.append({"flow": f"{f.src.side}{f.src.pos}->{f.dsts[0].side}{f.dsts[0].pos}",
                      "wavelets": len(p), "span_cycles": span,
                      "wavelets_per_cycle": len(p) / span, "in_order": in_order})
    return ThroughputResult(status=STATUS[res.status], streams=rates)


def malformed_config(shape: MeshShape) -> list[tuple[str, int, int, int]]:
    """``(what, edge side/row encoded, payload, cc)`` for each malformed configuration wavelet.

    All are sent into row 0's west edge unless noted; each must be dropped and counted once.
    """
    last = shape.cols - 1
    hdr = cc(CFG_COLOR, 1)
    cases = [
        ("unknown opcode 5", cfg_header(last, 5, 0, 0), hdr),
        ("unknown opcode 7", cfg_header(0, 7, 1, 2), hdr),
        ("route of a reserved color", cfg_header(last, CfgOp.ROUTE, ROUTABLE_COLORS,
                                                 route_entry(Port.W, [Port.N])), hdr),
        ("route from port 6",
         cfg_header(0, CfgOp.ROUTE, 3, pack(RouteEntry, src=6, dst=1 << Port.N)), hdr),
        ("route with high bits set", cfg_header(0, CfgOp.ROUTE, 3, 1 << width_of(RouteEntry)),
         hdr),
        ("PE register 9", cfg_header(last, CfgOp.PE_REG, 9, 1), hdr),
        ("PE register value 40", cfg_header(0, CfgOp.PE_REG, 0, 40), hdr),
        ("burst beyond SRAM", cfg_header(0, CfgOp.SRAM_BURST, 0, shape.sram_words), hdr),
        ("read of counter 100",
         cfg_header(last, CfgOp.READ, pack(ReadAddress, counter=100), 0), hdr),
    ]
    if shape.cols < 32:
        cases.append(("header for a column beyond the edge",
                      cfg_header(shape.cols, CfgOp.ROUTE, 0, route_entry(Port.W, [Port.N])), hdr))
    # A data word after a non-burst header is an error at the addressed agent.
    cases.append(("data after a non-burst header", 0xDEADBEEF, cc(CFG_COLOR, 0)))
    return cases


@bench(BadConfigResult)
async def bad_config(fabric: Fabric, seed: int = 1) -> BadConfigResult:
    """Malformed configuration wavelets are dropped and counted, and the fabric still works."""
    shape = fabric.shape
    rng = np.random.default_rng(seed)
    cases = malformed_config(shape)
    order = rng.permutation(len(cases))
    w0 = fabric.port("W", 0)
    for i in order:
        _, payload, c = cases[i]
        fabric.send(w0, [payload], [c])
    # A configuration wavelet from the north edge (wrong input) and a data word with no header
    # in a fresh row (row 1 or, in a one-row mesh, after the north one) are router drops.
    fabric.send(fabric.port("N", 0), [cfg_header(0, CfgOp.ROUTE, 0, 0x0B)], [cc(CFG_COLOR, 1)])
    extra = 1
    if shape.rows > 1:
        fabric.send(fabric.port("W", 1), [0x12345678], [cc(CFG_COLOR, 0)])
        extra += 1
    await fabric.settle(20 + 4 * shape.cols)
    counters = await fabric.read_counters((Counter.CFG_ERRORS,))
    counted = int(counters["cfg_errors"].sum())
    # The fabric still works: a stress run after the bad wavelets.
    after = await stress(fabric, wavelets=200, seed=seed + 1, max_stall=0.3)
    return BadConfigResult(
        sent_malformed=len(cases) + extra, counted=counted, cases=[c[0] for c in cases],
        per_tile=counters["cfg_errors"].tolist(),
        stress_after={k: getattr(after, k) for k in ("lost", "duplicated", "out_of_order",
                                                     "status")})


@dataclass
class StrayResult(BenchResult):
    """Wavelets on colors no route accepts, sent into every edge port of an unconfigured mesh.

    ``expected`` and ``counted`` are the route drops per tile (rows x cols): the wavelets that
    entered each edge tile and its ``route_drops`` counter; ``delivered`` the wavelets that
    came out of any edge (none may); ``stress_after`` the stress run that follows.
    """

    sent: int
    expected: list
    counted: list
    delivered: int
    stress_after: dict

    @property
    def clean(self) -> bool:
        after = self.stress_after
        return (self.expected == self.counted and self.delivered == 0
                and after["lost"] == after["duplicated"] == after["out_of_order"] == 0
                and after["status"] == "complete")


@bench(StrayResult)
async def stray_wavelets(fabric: Fabric, per_port: int = 4, seed: int = 1) -> StrayResult:
    """Stray data is dropped where it enters and counted there, and the fabric still works.

    Every edge port of a mesh with no routes sends ``per_port`` wavelets on random routable
    colors, back to back: the tile each enters must drop every one and count it in its
    ``route_drops`` (an edge tile of a 1-row or 1-column mesh takes several edges), no edge
    may receive any, and a stress run afterwards must deliver everything.
    """
    from ...hdl.formats import Counter

    shape = fabric.shape
    rng = np.random.default_rng(seed)
    before = await fabric.read_counters((Counter.ROUTE_DROPS,))
    expected = np.zeros((shape.rows, shape.cols), dtype=int)
    entry = {"N": lambda p: (0, p), "S": lambda p: (shape.rows - 1, p),
             "W": lambda p: (p, 0), "E": lambda p: (p, shape.cols - 1)}
    for p in fabric.ports:
        colors = rng.integers(0, shape.route_colors, per_port)
        fabric.send(p.index, np.arange(per_port), [cc(int(c)) for c in colors])
        expected[entry[p.side](p.pos)] += per_port
    await fabric.settle(64 + 4 * per_port)
    delivered = sum(len(fabric.receive(p.index)[0]) for p in fabric.ports)
    after = await fabric.read_counters((Counter.ROUTE_DROPS,))
    counted = fabric.counter_delta(after, before)["route_drops"].astype(int)
    again = await stress(fabric, wavelets=200, seed=seed + 1, max_stall=0.3)
    return StrayResult(sent=per_port * len(fabric.ports), expected=expected.tolist(),
                       counted=counted.tolist(), delivered=int(delivered),
                       stress_after={k: getattr(again, k) for k in ("lost", "duplicated",
                                                                    "out_of_order", "status")})
