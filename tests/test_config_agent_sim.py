"""ConfigAgent unit tests in Amaranth's simulator.

A :class:`Driver` streams configuration wavelets into ``cfg`` with seeded random gaps; a
monitor records every route / PE-register / SRAM strobe (and checks it coincides with a ``cfg``
transfer) and sinks ``resp`` with random ``ready`` stalls, checking the stream rule. The result
is compared with :func:`agent_model`, a plain function of the wavelet list.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import pytest
from amaranth.hdl import Cat
from amaranth.sim import Simulator
from sparktile.hdl.formats import (
    CFG_COLOR,
    NUM_COUNTERS,
    NUM_PE_REGS,
    NUM_PORTS,
    PAYLOAD_BITS,
    ROUTABLE_COLORS,
    RSP_COLOR,
    WAVELET_BITS,
    CfgHeader,
    CfgOp,
    CfgResponse,
    Port,
    RouteEntry,
    Wavelet,
    cat_bits,
    cfg_header,
    decode_response,
    pack,
    route_entry,
    split_bits,
    unpack,
    width_of,
)
from sparktile.hdl.tile import ConfigAgent

COL = 2
SRAM_WORDS = 64


def header(op, addr=0, value=0, col=COL) -> int:
    """A header wavelet; ``op`` may be any 3-bit opcode, ``addr``/``value`` any field value."""
    payload = pack(CfgHeader, col=col, op=int(op) & 7, addr=addr & 0xFF, value=value & 0xFFFF)
    return pack(Wavelet, payload=payload, color=CFG_COLOR, ctrl=1)


def data(value) -> int:
    return pack(Wavelet, payload=value & ((1 << PAYLOAD_BITS) - 1), color=CFG_COLOR)


def response(col, addr, half) -> int:
    return pack(Wavelet, payload=pack(CfgResponse, col=col, addr=addr, value=half),
                color=RSP_COLOR)


# ---- reference model -----------------------------------------------------------------------

def reg_ok(addr, value, pe, sram_words, n_queues=4):
    """Whether a PE_REG write names a register of ``pe`` and a value it holds."""
    if pe == "gemv":
        return addr < NUM_PE_REGS and value < 32
    if addr < 0x20:         # the core's task table: program address [14:0], valid [15]
        # (a valid program starts on an instruction row: a multiple of 4 words)
        return not value >> 15 or ((value & 0x7FFF) < sram_words and value % 4 == 0)
    return addr < 0x20 + n_queues and value < 64     # queue bindings: color [4:0], valid [5]


def agent_model(items, *, col=COL, sram_words=SRAM_WORDS, counters, pe="gemv"):
    """Strobes ``("route", color, entry) | ("reg", addr, value) | ("sram", addr, word)``,
    responses and the error count that ``items`` must produce."""
    events, resps, errors = [], [], 0
    burst, ptr = False, 0
    for w in items:
        wl = unpack(Wavelet, w)
        p = wl["payload"]
        if wl["ctrl"]:
            burst = False
            h = unpack(CfgHeader, p)
            op, addr, value = h["op"], h["addr"], h["value"]
            if op == CfgOp.ROUTE and addr < ROUTABLE_COLORS \
                    and unpack(RouteEntry, value)["src"] < NUM_PORTS \
                    and value >> width_of(RouteEntry) == 0:
                events.append(("route", addr, value))
            elif op == CfgOp.PE_REG and reg_ok(addr, value, pe, sram_words):
                events.append(("reg", addr, value))
            elif op == CfgOp.SRAM_BURST and addr == 0 and value < sram_words:
                burst, ptr = True, value
            elif op == CfgOp.READ and addr >> 1 < NUM_COUNTERS:
                half = counters[addr >> 1] >> (16 * (addr & 1)) & 0xFFFF
                resps.append(response(col, addr, half))
            else:
                errors += 1
        elif burst and ptr < sram_words:
            events.append(("sram", ptr, p))
            ptr += 1
        else:
            errors += 1
    return events, resps, errors


# ---- bench ---------------------------------------------------------------------------------

@dataclass
class AgentRun:
    events: list
    responses: list
    errors: int


def run_agent(items, *, seed, counters, p_valid=0.7, p_ready=0.6, col=COL,
              sram_words=SRAM_WORDS, pe="gemv") -> AgentRun:
    dut = ConfigAgent(col=col, sram_words=sram_words, pe=pe)
    rng = random.Random(seed)
    queue = deque(items)
    drive = Cat(dut.cfg.valid, dut.cfg.payload.as_value(), dut.resp.ready)
    observe = Cat(dut.cfg.ready,
                  dut.route_write.en, dut.route_write.color, dut.route_write.entry.as_value(),
                  dut.reg_write.en, dut.reg_write.addr, dut.reg_write.data,
                  dut.sram_write.en, dut.sram_write.addr, dut.sram_write.data,
                  dut.resp.valid, dut.resp.payload.as_value())
    widths = [1, 1, len(dut.route_write.color), len(dut.route_write.entry.as_value()),
              1, len(dut.reg_write.addr), len(dut.reg_write.data),
              1, len(dut.sram_write.addr), len(dut.sram_write.data), 1, WAVELET_BITS]
    events, responses = [], []

    async def bench(ctx):
        for c, v in enumerate(counters):
            ctx.set(dut.counters[c], v)
        valid, waiting, quiet, cycle = 0, None, 0, 0
        while quiet < 4:
            if not valid and queue and rng.random() < p_valid:
                valid = 1
            ready = int(rng.random() < p_ready)
            ctx.set(drive, cat_bits((valid, 1), (queue[0] if valid else 0, WAVELET_BITS),
                                    (ready, 1)))
            (cfg_ready, rw_en, rw_color, rw_entry, reg_en, reg_addr, reg_data, sr_en, sr_addr,
             sr_data, resp_valid, resp_w) = split_bits(ctx.get(observe), *widths)
            fire = valid and cfg_ready
            for name, en, a, d in (("route", rw_en, rw_color, rw_entry),
                                   ("reg", reg_en, reg_addr, reg_data),
                                   ("sram", sr_en, sr_addr, sr_data)):
                if en:
                    assert fire, (f"seed={seed}: {name} strobe at cycle {cycle} "
                                  f"without a cfg transfer")
                    events.append((name, a, d))
            if waiting is not None:
                assert resp_valid and resp_w == waiting, (
                    f"seed={seed}: resp broke the stream rule at cycle {cycle}: "
                    f"{waiting:#x} -> valid={resp_valid} {resp_w:#x}")
            if resp_valid and ready:
                responses.append(resp_w)
            waiting = resp_w if resp_valid and not ready else None
            if fire:
                queue.popleft()
                valid = 0
            await ctx.tick()
            cycle += 1
            quiet = quiet + 1 if not queue and not resp_valid else 0
            assert cycle < 20 * len(items) + 100, f"seed={seed}: cfg stream stalled"
        result["errors"] = ctx.get(dut.errors)

    result = {}
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return AgentRun(events, responses, result["errors"])


def random_counters(seed):
    rng = random.Random(seed)
    return [rng.getrandbits(32) for _ in range(NUM_COUNTERS)]


def check(items, *, seed, counters=None, **kw) -> AgentRun:
    counters = counters or random_counters(seed)
    run = run_agent(items, seed=seed, counters=counters, **kw)
    events, resps, errors = agent_model(items, counters=counters, pe=kw.get("pe", "gemv"),
                                        sram_words=kw.get("sram_words", SRAM_WORDS))
    assert run.events == events, f"seed={seed}: strobes {run.events}, model says {events}"
    assert run.responses == resps, (
        f"seed={seed}: responses {[hex(r) for r in run.responses]}, "
        f"model says {[hex(r) for r in resps]}")
    assert run.errors == errors, f"seed={seed}: errors = {run.errors}, model says {errors}"
    return run


# ---- well-formed operations ----------------------------------------------------------------

def test_route_writes():
    seed = 1
    cases = [(0, Port.N, []), (5, Port.W, [Port.E, Port.RAMP]),
             (ROUTABLE_COLORS - 1, Port.RAMP, list(Port))]
    items = [header(CfgOp.ROUTE, c, route_entry(src, dst)) for c, src, dst in cases]
    run = check(items, seed=seed)
    assert run.events == [("route", c, route_entry(src, dst)) for c, src, dst in cases]
    assert run.errors == 0


def test_pe_reg_writes():
    seed = 2
    items = [header(CfgOp.PE_REG, a, v) for a, v in ((0, 0), (1, 31), (2, 17))]
    run = check(items, seed=seed)
    assert run.events == [("reg", 0, 0), ("reg", 1, 31), ("reg", 2, 17)]


def test_core_task_table_and_queue_writes():
    """A core tile's agent (``pe="core"``) writes the task table (any color, a program inside
    the SRAM, or an invalid entry) and the four queue bindings, and counts as errors a program
    outside the SRAM or not on an instruction row, a fifth queue, a binding value over 63 and
    every register above."""
    from sparktile.hdl import isa
    seed = 21
    good = [(isa.task_reg(0), isa.task_entry(0)), (isa.task_reg(31), isa.task_entry(60)),
            (isa.task_reg(5), 0x7FFF),                      # invalid entry: any address
            (isa.queue_reg(0, 4), isa.queue_entry(0)), (isa.queue_reg(3, 4), isa.queue_entry(31))]
    bad = [(isa.task_reg(1), isa.task_entry(64)),           # past the 64-word SRAM
           (isa.task_reg(2), isa.TASK_ADDR_LIMIT | 61),     # not on an instruction row
           (0x24, isa.queue_entry(1)), (isa.queue_reg(1, 4), 64), (0xFF, 0)]
    items = [header(CfgOp.PE_REG, a, v) for a, v in good + bad]
    run = check(items, seed=seed, pe="core")
    assert run.events == [("reg", a, v) for a, v in good]
    assert run.errors == len(bad)
    # The fixed-function PE's agent refuses every one of them (registers 0..2, values < 32).
    run = check(items, seed=seed, pe="gemv")
    assert run.events == [] and run.errors == len(items)


def test_sram_bursts():
    seed = 3
    rng = random.Random(seed)
    words = [rng.getrandbits(32) for _ in range(8)]
    items = ([header(CfgOp.SRAM_BURST, 0, 10)] + [data(w) for w in words[:5]]
             + [header(CfgOp.SRAM_BURST, 0, SRAM_WORDS - 1), data(words[5])]
             + [header(CfgOp.SRAM_BURST, 0, 0), data(words[6]), data(words[7])])
    run = check(items, seed=seed)
    assert run.events == ([("sram", 10 + k, w) for k, w in enumerate(words[:5])]
                          + [("sram", SRAM_WORDS - 1, words[5])]
                          + [("sram", 0, words[6]), ("sram", 1, words[7])])
    assert run.errors == 0


@pytest.mark.parametrize("p_ready", [1.0, 0.3], ids=["no_stall", "resp_stalls"])
def test_read_every_counter_half(p_ready):
    seed = 4
    counters = random_counters(seed)
    items = [header(CfgOp.READ, a) for a in range(2 * NUM_COUNTERS)]
    run = check(items, seed=seed, counters=counters, p_ready=p_ready)
    for a, r in enumerate(run.responses):
        wl = unpack(Wavelet, r)
        assert (wl["color"], wl["ctrl"]) == (RSP_COLOR, 0), f"seed={seed}: response {wl}"
        assert decode_response(wl["payload"]) == (COL, a, counters[a // 2] >> 16 * (a % 2)
                                                  & 0xFFFF), f"seed={seed}: address {a}"
        assert unpack(CfgResponse, wl["payload"])["zero"] == 0, (
            f"seed={seed}: bits [26:24] of a response must be 0")
    assert len(run.responses) == 2 * NUM_COUNTERS and run.errors == 0


# ---- malformed operations: one error each, no strobe ---------------------------------------

#: name: (wavelets, strobes the well-formed ones among them give). Exactly one is malformed.
MALFORMED = {
    "opcode_4": ([header(4)], []),
    "opcode_5": ([header(5, 1, 1)], []),
    "opcode_7": ([header(7, 0xFF, 0xFFFF)], []),
    "route_color_30": ([header(CfgOp.ROUTE, ROUTABLE_COLORS, route_entry(Port.N, [Port.E]))],
                       []),
    "route_color_31": ([header(CfgOp.ROUTE, 31, route_entry(Port.N, [Port.E]))], []),
    "route_color_255": ([header(CfgOp.ROUTE, 255, 0)], []),
    "route_src_5": ([header(CfgOp.ROUTE, 3, pack(RouteEntry, src=5, dst=0b00010))], []),
    "route_src_7": ([header(CfgOp.ROUTE, 3, 7)], []),
    "route_high_byte": ([header(CfgOp.ROUTE, 3, route_entry(Port.W, [Port.E]) | 0x100)], []),
    "route_high_byte_ff": ([header(CfgOp.ROUTE, 3, 0xFF00)], []),
    "pe_reg_addr_3": ([header(CfgOp.PE_REG, NUM_PE_REGS, 1)], []),
    "pe_reg_addr_255": ([header(CfgOp.PE_REG, 255, 1)], []),
    "pe_reg_value_32": ([header(CfgOp.PE_REG, 0, 32)], []),
    "pe_reg_value_ffff": ([header(CfgOp.PE_REG, 2, 0xFFFF)], []),
    "burst_start_end": ([header(CfgOp.SRAM_BURST, 0, SRAM_WORDS)], []),
    "burst_start_ffff": ([header(CfgOp.SRAM_BURST, 0, 0xFFFF)], []),
    "burst_addr_1": ([header(CfgOp.SRAM_BURST, 1, 0)], []),
    "data_without_burst": ([data(0x1234_5678)], []),
    "data_after_other_header": ([header(CfgOp.SRAM_BURST, 0, 4), data(1),
                                 header(CfgOp.PE_REG, 0, 3), data(2)],
                                [("sram", 4, 1), ("reg", 0, 3)]),
    "burst_overflow": ([header(CfgOp.SRAM_BURST, 0, SRAM_WORDS - 2), data(1), data(2), data(3)],
                       [("sram", SRAM_WORDS - 2, 1), ("sram", SRAM_WORDS - 1, 2)]),
    "read_index_9": ([header(CfgOp.READ, 2 * NUM_COUNTERS)], []),
    "read_index_9_high": ([header(CfgOp.READ, 2 * NUM_COUNTERS + 1)], []),
    "read_index_127": ([header(CfgOp.READ, 255)], []),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_counts_one_error_and_strobes_nothing(name):
    seed = 100 + list(MALFORMED).index(name)
    items, strobes = MALFORMED[name]
    run = check(items, seed=seed)
    assert run.errors == 1, f"seed={seed}: {name}: errors = {run.errors}"
    assert run.events == strobes, f"seed={seed}: {name}: strobes {run.events}"
    assert run.responses == [], f"seed={seed}: {name}: responses {run.responses}"


def test_malformed_burst_header_leaves_no_burst_open():
    # A rejected burst header also closes any open burst: its data words are errors too.
    seed = 150
    items = [header(CfgOp.SRAM_BURST, 0, 3), data(1), header(CfgOp.SRAM_BURST, 0, SRAM_WORDS),
             data(2)]
    run = check(items, seed=seed)
    assert run.events == [("sram", 3, 1)] and run.errors == 2, f"seed={seed}"


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_random_mix_matches_model(seed):
    rng = random.Random(seed)
    items = []
    for _ in range(120):
        r = rng.random()
        if r < 0.25:
            items.append(data(rng.getrandbits(32)))
        elif r < 0.4:
            items.append(header(CfgOp.SRAM_BURST, rng.choice([0, 0, 0, 1]),
                                rng.choice([0, rng.randrange(SRAM_WORDS), SRAM_WORDS - 1,
                                            SRAM_WORDS])))
        elif r < 0.55:
            items.append(header(CfgOp.READ, rng.randrange(2 * NUM_COUNTERS + 4)))
        elif r < 0.75:
            items.append(header(CfgOp.ROUTE, rng.randrange(34),
                                rng.choice([route_entry(rng.randrange(5), [Port.E]),
                                            rng.getrandbits(8), rng.getrandbits(16)])))
        elif r < 0.9:
            items.append(header(CfgOp.PE_REG, rng.randrange(5), rng.choice([rng.randrange(32),
                                                                             rng.randrange(64)])))
        else:
            items.append(header(rng.randrange(4, 8), rng.getrandbits(8), rng.getrandbits(16)))
    check(items, seed=seed, p_valid=0.8, p_ready=0.5)


def test_header_column_field_is_echoed_not_checked():
    # The router matches the column; the agent answers with its own column, whatever the header
    # says (cfg_header is the public encoder: use it once here).
    seed = 160
    counters = random_counters(seed)
    items = [pack(Wavelet, payload=cfg_header(5, CfgOp.READ, 1), color=CFG_COLOR, ctrl=1)]
    run = check(items, seed=seed, counters=counters)
    assert decode_response(unpack(Wavelet, run.responses[0])["payload"]) == (
        COL, 1, counters[0] >> 16)
