"""The host bridge executes nothing before its CRC passes, and resynchronizes after garbage.

The design under test is a one-row, one-column :class:`~sparktile.hdl.fpga.bridge.HostBridge`
with its smallest buffers (16-byte frames, a 4-cycle frame timeout), every input free: the
UART's bytes and strobes, the reply stream's ``ready``, the mesh edges' ``ready`` and the east
edge's wavelets. The spec is a second reading of the frame format written from
:mod:`~sparktile.hdl.fpga.protocol`'s description, not from the bridge: it hunts for
``SYNC0 SYNC1``, takes ``LEN``, ``CMD``, the payload and the CRC, computes CRC-16/CCITT-FALSE
bit by bit (its own shift register, not :mod:`amaranth.lib.crc`), ends a frame at its last
CRC byte, at an oversized ``LEN`` or after ``frame_timeout`` quiet cycles, and ignores bytes
until the reply's last byte has left. It parses the reply stream the same way. Asserted every
cycle:

* **frame boundaries agree** (resynchronization): the bridge's ``busy`` is 1 exactly while
  the spec is between the end of a frame and the end of its reply, whatever bytes came before
  (garbage, phantom ``SYNC0``, half frames, bytes during a reply);
* **nothing executes before the CRC passes**: a wavelet is offered to the mesh only after a
  WRITE frame whose CRC the spec checked, and a reply other than ERROR names the command of a
  frame whose CRC passed;
* **every frame gets its verdict**: the reply to a frame with a wrong CRC is ``ERROR
  BAD_CRC``, to an abandoned one ``ERROR TIMEOUT``, to an oversized one ``ERROR BAD_LEN``, and
  a frame that passed is never answered with one of those three;
* **every reply is a frame**: ``SYNC0 SYNC1``, a length, and a CRC that the spec recomputes;
  no byte leaves outside a reply.

Mutants: :func:`crc_ignoring_bridge` (the CRC check dropped: the bridge acts on every frame)
fails "nothing executes before the CRC passes"; :func:`sync_losing_bridge` (``SYNC0 SYNC0
SYNC1`` is not a frame start) fails "frame boundaries agree".
"""

from __future__ import annotations

from amaranth.hdl import Assert, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..hdl.formats import Wavelet
from ..hdl.fpga.bridge import HostBridge
from ..hdl.fpga.protocol import SYNC, Cmd, ErrorCode

__all__ = ["BridgeSpec", "crc16_step", "crc_ignoring_bridge", "sync_losing_bridge"]

#: The bridge's smallest buffers (a bounded run then reaches a whole frame and its reply).
BRIDGE_ARGS = dict(rows=1, cols=1, max_payload=16, east_depth=2, frame_timeout=4,
                   stall_limit=2, status_bits=16)

# How the spec saw a frame end.
_OK, _BAD_CRC, _BAD_LEN, _TIMEOUT = range(4)


def crc16_step(m: Module, crc, byte):
    """CRC-16/CCITT-FALSE (poly 0x1021, MSB first) after one more byte, as a shift register:
    eight steps of ``crc = (crc << 1) ^ (0x1021 if crc[15] ^ bit else 0)``, each a signal
    (an expression of expressions would double at every step)."""
    for i in reversed(range(8)):
        nxt = Signal(16)
        m.d.comb += nxt.eq(Cat(Const(0, 1), crc[:15]) ^ ((crc[15] ^ byte[i]).replicate(16)
                                                        & 0x1021))
        crc = nxt
    return crc


class BridgeSpec(wiring.Component):
    """One host bridge against an independent frame parser (see the module docstring).

    Parameters
    ----------
    make : callable
        Builds the bridge (``make(**BRIDGE_ARGS)``), for the mutants.
    """

    def __init__(self, *, make=HostBridge):
        self.make = make
        super().__init__({"rx_data": In(8), "rx_strobe": In(1), "tx_ready": In(1),
                          "west_ready": In(1), "north_ready": In(1), "east_valid": In(1),
                          "east_payload": In(Wavelet), "edge_drops": In(8)})

    def elaborate(self, platform):
        m = Module()
        args = BRIDGE_ARGS
        m.submodules.dut = dut = self.make(**args)
        m.d.comb += [dut.rx_data.eq(self.rx_data), dut.rx_strobe.eq(self.rx_strobe),
                     dut.tx.ready.eq(self.tx_ready), dut.west[0].ready.eq(self.west_ready),
                     dut.north[0].ready.eq(self.north_ready),
                     dut.east[0].valid.eq(self.east_valid),
                     dut.east[0].payload.eq(self.east_payload),
                     dut.edge_drops.eq(self.edge_drops)]

        # ---- the reply stream, parsed: SYNC SYNC LEN LEN CMD body CRC CRC ------------------
        sent = dut.tx.valid & dut.tx.ready
        tx_byte = dut.tx.payload
        tx_idx = Signal(8)
        tx_len = Signal(16)
        tx_cmd = Signal(8)
        tx_crc = Signal(16)
        reply_done = Signal()
        tx_stepped = crc16_step(m, tx_crc, tx_byte)
        with m.If(sent):
            m.d.sync += tx_idx.eq(tx_idx + 1)
            with m.Switch(tx_idx):
                with m.Case(0):
                    m.d.comb += Assert(tx_byte == SYNC[0], "a reply starts with SYNC0")
                    m.d.sync += tx_crc.eq(0xFFFF)
                with m.Case(1):
                    m.d.comb += Assert(tx_byte == SYNC[1], "then SYNC1")
                with m.Case(2):
                    m.d.sync += [tx_len[0:8].eq(tx_byte), tx_crc.eq(tx_stepped)]
                with m.Case(3):
                    m.d.sync += [tx_len[8:16].eq(tx_byte), tx_crc.eq(tx_stepped)]
                with m.Default():
                    body_end = 5 + tx_len
                    with m.If(tx_idx < body_end):
                        m.d.sync += tx_crc.eq(tx_stepped)
                    with m.Elif(tx_idx == body_end):
                        m.d.comb += Assert(tx_byte == tx_crc[8:16], "the reply's CRC, high")
                    with m.Else():
                        m.d.comb += [Assert(tx_byte == tx_crc[0:8], "the reply's CRC, low"),
                                     reply_done.eq(1)]
                        m.d.sync += tx_idx.eq(0)
            with m.If(tx_idx == 4):
                m.d.sync += tx_cmd.eq(tx_byte)

        # ---- the request stream, parsed from the protocol's description --------------------
        byte, got = self.rx_data, self.rx_strobe
        timeout = args["frame_timeout"]
        quiet = Signal(range(timeout + 1))
        with m.If(got):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != timeout):
            m.d.sync += quiet.eq(quiet + 1)
        timed_out = ~got & (quiet == timeout)

        crc = Signal(16)
        length = Signal(16)
        count = Signal(16)
        crc_hi = Signal(8)
        frame_cmd = Signal(8)
        frame_end = Signal(range(4))
        stepped = crc16_step(m, crc, byte)

        def end(how):
            m.d.sync += frame_end.eq(how)
            m.next = "BUSY"

        with m.FSM(name="spec") as spec:
            with m.State("HUNT"):
                with m.If(got & (byte == SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                with m.If(got):
                    with m.If(byte == SYNC[1]):
                        m.d.sync += crc.eq(0xFFFF)
                        m.next = "LEN0"
                    with m.Elif(byte != SYNC[0]):
                        m.next = "HUNT"
            for state, nxt, field in (("LEN0", "LEN1", length[0:8]),
                                      ("LEN1", "CMD", length[8:16]),
                                      ("CRC0", "CRC1", crc_hi)):
                with m.State(state):
                    with m.If(got):
                        m.d.sync += field.eq(byte)
                        if state != "CRC0":
                            m.d.sync += crc.eq(stepped)
                        m.next = nxt
                    with m.Elif(timed_out):
                        end(_TIMEOUT)
            with m.State("CMD"):
                with m.If(got):
                    m.d.sync += [frame_cmd.eq(byte), crc.eq(stepped), count.eq(0)]
                    with m.If(length > args["max_payload"]):
                        end(_BAD_LEN)
                    with m.Elif(length == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    end(_TIMEOUT)
            with m.State("PAYLOAD"):
                with m.If(got):
                    m.d.sync += [crc.eq(stepped), count.eq(count + 1)]
                    with m.If(count + 1 == length):
                        m.next = "CRC0"
                with m.Elif(timed_out):
                    end(_TIMEOUT)
            with m.State("CRC1"):
                with m.If(got):
                    end(Mux(Cat(byte, crc_hi) == crc, _OK, _BAD_CRC))
                with m.Elif(timed_out):
                    end(_TIMEOUT)
            with m.State("BUSY"):
                with m.If(reply_done):
                    m.next = "HUNT"
        busy = spec.ongoing("BUSY")

        # ---- the properties ----------------------------------------------------------------
        m.d.comb += [
            Assert(dut.busy == busy, "the bridge's frame boundaries are the protocol's"),
            Assert(~dut.tx.valid | busy, "no byte leaves outside a reply"),
        ]
        passed = busy & (frame_end == _OK)
        with m.If(dut.west[0].valid | dut.north[0].valid):
            m.d.comb += Assert(passed & (frame_cmd == Cmd.WRITE),
                               "a wavelet enters the mesh only after its WRITE's CRC passed")
        with m.If(sent & (tx_idx == 4)):
            with m.If(passed):
                m.d.comb += Assert((tx_byte == (frame_cmd | Cmd.REPLY)) | (tx_byte == Cmd.ERROR),
                                   "a frame that passed is answered for its command")
            with m.Else():
                m.d.comb += Assert(tx_byte == Cmd.ERROR, "only a frame that passed executes")
        with m.If(sent & (tx_idx == 5) & (tx_cmd == Cmd.ERROR)):
            with m.Switch(frame_end):
                with m.Case(_BAD_CRC):
                    m.d.comb += Assert(tx_byte == ErrorCode.BAD_CRC, "a wrong CRC is BAD_CRC")
                with m.Case(_TIMEOUT):
                    m.d.comb += Assert(tx_byte == ErrorCode.TIMEOUT, "a half frame is TIMEOUT")
                with m.Case(_BAD_LEN):
                    m.d.comb += Assert(tx_byte == ErrorCode.BAD_LEN, "an oversized LEN is BAD_LEN")
                with m.Case(_OK):
                    m.d.comb += Assert((tx_byte == ErrorCode.BAD_ARG) |
                                       (tx_byte == ErrorCode.BAD_CMD),
                                       "a frame that passed is refused only for its content")
        return m


def crc_ignoring_bridge(**kwargs):
    """Mutant: the CRC check dropped, so the bridge acts on every frame it delimits."""
    from .mutants import mutate
    module = mutate("sparktile.hdl.fpga.bridge", "with m.If(~rx_crc.match_detected):",
                    "with m.If(Const(0)):", tag="crc_ignoring")
    return module.HostBridge(**kwargs)


def sync_losing_bridge(**kwargs):
    """Mutant: a repeated ``SYNC0`` sends the bridge back to hunting, so ``SYNC0 SYNC0
    SYNC1 ...`` (garbage ending in ``SYNC0`` before a frame) loses the frame."""
    from .mutants import mutate
    module = mutate("sparktile.hdl.fpga.bridge", "with m.Elif(byte != SYNC[0]):",
                    "with m.Elif(1):", tag="sync_losing")
    return module.HostBridge(**kwargs)
