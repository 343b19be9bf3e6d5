"""The host bridge: framed requests from the UART into the mesh's edges, replies back.

See :mod:`.protocol` for the frame layout. The bridge handles one request at a time:

1. **Receive.** Hunt for ``SYNC0 SYNC1``; take ``LEN``, ``CMD`` and the payload into a buffer
   (``max_payload`` bytes); check the CRC. Nothing executes before the whole frame has passed
   the CRC, so a corrupted frame can never put a wrong wavelet into the mesh. A frame that
   stops arriving for ``frame_timeout`` cycles (a dropped byte) is abandoned with a TIMEOUT
   error reply, so the bridge never waits forever for bytes that will not come.
2. **Execute.** WRITE pushes the payload's wavelets into one west (configuration) or north
   (activation) edge port. If the mesh does not take a wavelet for ``stall_limit`` cycles the
   command stops and replies with the number accepted (``stalled = 1``): the host then drains
   the east edge and sends the rest, so a full mesh never hangs the link. READ pops up to the
   requested number of wavelets that left the mesh's east edge (results, counter responses),
   collected round-robin from every row into one FIFO tagged with the row.
3. **Reply**, through a CRC generator, then hunt again. Bytes arriving while the bridge is
   executing or replying are dropped and counted as overruns (the host waits for each reply).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import crc, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..formats import COLOR_BITS, Wavelet
from .protocol import (
    CRC_PARAMS,
    PING_MAGIC,
    PROTOCOL_VERSION,
    STATUS_FIELDS,
    SYNC,
    WAVELET_IN_BYTES,
    WAVELET_OUT_BYTES,
    Cmd,
    ErrorCode,
)

__all__ = ["HostBridge", "ping_reply"]


def ping_reply(*, rows, cols, sram_kb, acc_depth, max_payload, east_depth, divisor,
               clk_hz) -> bytes:
    """The PING reply's payload: the board describes itself (the host needs the mesh's
    geometry to compile a mapping, and the buffer sizes to size its frames)."""
    return (PING_MAGIC + bytes([PROTOCOL_VERSION, rows, cols]) +
            sram_kb.to_bytes(2, "little") + acc_depth.to_bytes(2, "little") +
            max_payload.to_bytes(2, "little") + east_depth.to_bytes(2, "little") +
            divisor.to_bytes(2, "little") + int(clk_hz).to_bytes(4, "little"))


def _check(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return value


class HostBridge(wiring.Component):
    """Framed request/reply bridge between a UART and the mesh's edge ports.

    Parameters
    ----------
    rows, cols : int
        Mesh geometry (west ports per row, north ports per column, east rows collected).
    sram_kb, acc_depth : int
        Reported by PING (the mesh's PE memories).
    max_payload : int
        Frame buffer in bytes (16..65535).
    east_depth : int
        Entries of the east-edge collection FIFO.
    frame_timeout : int
        Cycles without a byte after which a half-received frame is abandoned (at least 4; on
        a real link it must exceed a byte's time, and the top level sets 64 of them).
    stall_limit : int
        Cycles a WRITE waits for the mesh to take one wavelet before replying "stalled".
    divisor, clk_hz : int
        Reported by PING (the UART's clocks per bit and the fabric clock).
    status_bits : int
        Width of the STATUS counters, 16 or 32 (they are still sent as 4 bytes; small FPGAs
        use 16, and the counters then wrap at 65536).

    Members
    -------
    rx_data : In(8), rx_strobe : In(1)
        Bytes from :class:`~.uart.UartRx`.
    tx : Out(stream.Signature(8))
        Bytes to :class:`~.uart.UartTx`.
    west : Out(stream.Signature(Wavelet)).array(rows)
        Into the mesh's ``west_in``.
    north : Out(stream.Signature(Wavelet)).array(cols)
        Into the mesh's ``north_in``.
    east : In(stream.Signature(Wavelet)).array(rows)
        From the mesh's ``east_out``.
    edge_drops : In(8)
        Wavelets discarded this cycle at the mesh's other outputs (counted).
    busy : Out(1)
        1 from the cycle after a frame ends (its last CRC byte, an oversized LEN, a timeout)
        until its reply's last byte has left: bytes arriving now are dropped (overruns). A
        status LED on a board; the formal spec checks it against the protocol's frame
        boundaries.
    """

    def __init__(self, *, rows: int, cols: int, sram_kb: int = 16, acc_depth: int = 256,
                 max_payload: int = 1024,
                 east_depth: int = 512, frame_timeout: int = 1 << 16,
                 stall_limit: int = 1 << 16, divisor: int = 4, clk_hz: int = 0,
                 status_bits: int = 32):
        if status_bits not in (16, 32):
            raise ValueError(f"status_bits must be 16 or 32, not {status_bits!r}")
        self.status_bits = status_bits
        self.check_params(rows=rows, cols=cols, sram_kb=sram_kb, max_payload=max_payload,
                          east_depth=east_depth, frame_timeout=frame_timeout,
                          stall_limit=stall_limit)
        self.rows, self.cols, self.sram_kb, self.acc_depth = rows, cols, sram_kb, acc_depth
        self.max_payload, self.east_depth = max_payload, east_depth
        self.frame_timeout, self.stall_limit = frame_timeout, stall_limit
        self.divisor = divisor
        self.clk_hz = int(clk_hz)
        w = stream.Signature(Wavelet)
        super().__init__({
            "rx_data": In(8), "rx_strobe": In(1),
            "tx": Out(stream.Signature(8)),
            "west": Out(w).array(rows), "north": Out(w).array(cols),
            "east": In(w).array(rows),
            "edge_drops": In(8),
            "busy": Out(1),
        })

    @staticmethod
    def check_params(*, rows, cols, sram_kb, max_payload, east_depth, frame_timeout,
                     stall_limit, **_ignored):
        """Raise ValueError naming the first parameter out of range."""
        _check("rows", rows, 1, 32)
        _check("cols", cols, 1, 32)
        _check("sram_kb", sram_kb, 1, 65535)
        _check("max_payload", max_payload, 16, 65535)
        _check("east_depth", east_depth, 2, 65535)
        _check("frame_timeout", frame_timeout, 4, 1 << 30)
        _check("stall_limit", stall_limit, 2, 1 << 30)

    @property
    def ping_payload(self) -> bytes:
        return ping_reply(rows=self.rows, cols=self.cols, sram_kb=self.sram_kb,
                          acc_depth=self.acc_depth,
                          max_payload=self.max_payload, east_depth=self.east_depth,
                          divisor=self.divisor, clk_hz=self.clk_hz)

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols

        # ---- counters (STATUS) ----------------------------------------------------------------
        cnt = {name: Signal(self.status_bits, name=f"st_{name}") for name in STATUS_FIELDS}
        m.d.sync += cnt["cycles"].eq(cnt["cycles"] + 1)
        m.d.sync += cnt["edge_drops"].eq(cnt["edge_drops"] + self.edge_drops)

        def bump(name):
            m.d.sync += cnt[name].eq(cnt[name] + 1)

        # ---- east-edge collection: round-robin over rows into one FIFO tagged with the row --
        wl = Wavelet.as_shape().size
        m.submodules.east_fifo = ef = fifo.SyncFIFOBuffered(width=wl + 5, depth=self.east_depth)
        sel = Signal(range(R))
        m.d.sync += sel.eq(Mux(sel == R - 1, 0, sel + 1))
        for r in range(R):
            # A consumer may drive ready from valid (stream rules); only the selected row.
            m.d.comb += self.east[r].ready.eq((sel == r) & ef.w_rdy)
            with m.If(sel == r):
                m.d.comb += [ef.w_data.eq(Cat(self.east[r].payload, Const(r, 5))),
                             ef.w_en.eq(self.east[r].valid)]
        m.d.comb += cnt["east_level"].eq(ef.r_level)

        # ---- frame buffer ---------------------------------------------------------------------
        m.submodules.buf = buf = memory.Memory(shape=8, depth=self.max_payload, init=[])
        bw = buf.write_port()
        br = buf.read_port()

        m.submodules.rx_crc = rx_crc = crc.Processor(CRC_PARAMS)
        m.submodules.tx_crc = tx_crc = crc.Processor(CRC_PARAMS)

        byte = self.rx_data
        got = self.rx_strobe
        length = Signal(16)
        cmd = Signal(8)
        idx = Signal(16)                 # payload bytes received / read pointer
        port = Signal(8)                 # WRITE: payload byte 0
        arg = Signal(16)                 # READ: payload bytes 0..1
        mod5 = Signal(range(5))          # WRITE: (payload bytes after the port) mod 5
        quiet = Signal(range(self.frame_timeout + 1))

        resp_cmd = Signal(8)
        resp_len = Signal(16)
        err_code = Signal(8)
        accepted = Signal(16)
        stalled = Signal()
        stall = Signal(range(self.stall_limit + 1))
        shreg = Signal(8 * WAVELET_IN_BYTES)
        nbyte = Signal(range(WAVELET_IN_BYTES + 1))
        # STATUS sends each counter as it was when its first byte became due: one counter's
        # register, not a snapshot of all ten (ten times the flip-flops, which the iCE40
        # cannot spare).
        held = Signal(self.status_bits)
        next_cnt = Signal(self.status_bits)
        hdr = Signal(range(5))
        body = Signal(16)
        ebyte = Signal(range(WAVELET_OUT_BYTES))

        m.d.comb += [rx_crc.data.eq(byte), tx_crc.data.eq(self.tx.payload)]
        receiving = Signal()
        m.d.comb += self.busy.eq(~receiving)

        def error(code):
            m.d.sync += [err_code.eq(code), resp_cmd.eq(Cmd.ERROR), resp_len.eq(2)]
            m.next = "TX_START"

        def reply(n):
            m.d.sync += [resp_cmd.eq(cmd | Cmd.REPLY), resp_len.eq(n)]
            m.next = "TX_START"

        def feed():
            """Take the byte into the CRC and restart the inter-byte timeout."""
            m.d.comb += rx_crc.valid.eq(1)

        with m.If(got & ~receiving):
            bump("overruns")
        with m.If(got):
            m.d.sync += quiet.eq(0)
        with m.Else():
            m.d.sync += quiet.eq(Mux(quiet == self.frame_timeout, quiet, quiet + 1))

        # ---- reply ------------------------------------------------------------------------
        hdr_bytes = Signal(8)
        with m.Switch(hdr):
            for i, v in enumerate((SYNC[0], SYNC[1])):
                with m.Case(i):
                    m.d.comb += hdr_bytes.eq(v)
            with m.Case(2):
                m.d.comb += hdr_bytes.eq(resp_len[0:8])
            with m.Case(3):
                m.d.comb += hdr_bytes.eq(resp_len[8:16])
            with m.Default():
                m.d.comb += hdr_bytes.eq(resp_cmd)
        with m.FSM(name="bridge"):
            # ---- receive ----------------------------------------------------------------------
            with m.State("HUNT"):
                m.d.comb += receiving.eq(1)
                with m.If(got):
                    with m.If(byte == SYNC[0]):
                        m.next = "SYNC1"
                    with m.Else():
                        bump("garbage_bytes")
            with m.State("SYNC1"):
                m.d.comb += receiving.eq(1)
                with m.If(got):
                    with m.If(byte == SYNC[1]):
                        m.d.comb += rx_crc.start.eq(1)
                        m.next = "LEN0"
                    with m.Elif(byte != SYNC[0]):   # SYNC0 SYNC0 SYNC1 is still a frame
                        bump("garbage_bytes")
                        m.next = "HUNT"
                    with m.Else():
                        bump("garbage_bytes")
            for state, nxt, action in (
                ("LEN0", "LEN1", lambda: m.d.sync.__iadd__(length[0:8].eq(byte))),
                ("LEN1", "CMD", lambda: m.d.sync.__iadd__(length[8:16].eq(byte))),
            ):
                with m.State(state):
                    m.d.comb += receiving.eq(1)
                    with m.If(got):
                        feed()
                        action()
                        m.next = nxt
                    with m.Elif(quiet == self.frame_timeout):
                        bump("timeouts")
                        error(ErrorCode.TIMEOUT)
            with m.State("CMD"):
                m.d.comb += receiving.eq(1)
                with m.If(got):
                    feed()
                    m.d.sync += [cmd.eq(byte), idx.eq(0), mod5.eq(0)]
                    with m.If(length > self.max_payload):
                        bump("len_errors")
                        error(ErrorCode.BAD_LEN)
                    with m.Elif(length == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Elif(quiet == self.frame_timeout):
                    bump("timeouts")
                    error(ErrorCode.TIMEOUT)
            with m.State("PAYLOAD"):
                m.d.comb += receiving.eq(1)
                with m.If(got):
                    feed()
                    m.d.comb += [bw.addr.eq(idx), bw.data.eq(byte), bw.en.eq(1)]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 0):
                        m.d.sync += [port.eq(byte), arg[0:8].eq(byte)]
                    with m.Else():
                        m.d.sync += mod5.eq(Mux(mod5 == 4, 0, mod5 + 1))
                    with m.If(idx == 1):
                        m.d.sync += arg[8:16].eq(byte)
                    with m.If(idx + 1 == length):
                        m.next = "CRC0"
                with m.Elif(quiet == self.frame_timeout):
                    bump("timeouts")
                    error(ErrorCode.TIMEOUT)
            for state, nxt in (("CRC0", "CRC1"), ("CRC1", "CHECK")):
                with m.State(state):
                    m.d.comb += receiving.eq(1)
                    with m.If(got):
                        feed()
                        m.next = nxt
                    with m.Elif(quiet == self.frame_timeout):
                        bump("timeouts")
                        error(ErrorCode.TIMEOUT)
            with m.State("CHECK"):
                with m.If(~rx_crc.match_detected):
                    bump("crc_errors")
                    error(ErrorCode.BAD_CRC)
                with m.Else():
                    bump("frames_ok")
                    with m.Switch(cmd):
                        with m.Case(Cmd.PING):
                            reply(len(self.ping_payload))
                        with m.Case(Cmd.STATUS):
                            m.d.sync += held.eq(cnt[STATUS_FIELDS[0]])
                            reply(4 * len(STATUS_FIELDS))
                        with m.Case(Cmd.READ):
                            with m.If(length != 2):
                                error(ErrorCode.BAD_ARG)
                            with m.Else():
                                m.next = "READ"
                        with m.Case(Cmd.WRITE):
                            north = port[7]
                            index = port[0:5]
                            bad_port = (port[5:7] != 0) | Mux(north, index >= C, index >= R)
                            with m.If((length == 0) | (mod5 != 0) | bad_port):
                                error(ErrorCode.BAD_ARG)
                            with m.Else():
                                m.d.sync += [idx.eq(1), accepted.eq(0), stalled.eq(0),
                                             nbyte.eq(0)]
                                with m.If(length == 1):
                                    reply(3)
                                with m.Else():
                                    m.next = "W_READ"
                        with m.Default():
                            error(ErrorCode.BAD_CMD)

            # ---- execute ----------------------------------------------------------------------
            with m.State("READ"):
                max_entries = self.max_payload // WAVELET_OUT_BYTES
                avail = Signal(16)
                n = Signal(16)
                m.d.comb += [avail.eq(Mux(ef.r_level < arg, ef.r_level, arg)),
                             n.eq(Mux(avail > max_entries, max_entries, avail))]
                m.d.sync += ebyte.eq(0)
                reply((n << 2) + (n << 1))
            with m.State("W_READ"):
                m.d.comb += br.addr.eq(idx)
                m.d.sync += [idx.eq(idx + 1), nbyte.eq(nbyte + 1)]
                m.next = "W_TAKE"
            with m.State("W_TAKE"):
                m.d.sync += shreg.eq(Cat(shreg[8:], br.data))
                with m.If(nbyte == WAVELET_IN_BYTES):
                    m.d.sync += [nbyte.eq(0), stall.eq(0)]
                    m.next = "W_PUSH"
                with m.Else():
                    m.next = "W_READ"
            with m.State("W_PUSH"):
                wav = Signal(Wavelet)
                m.d.comb += [wav.payload.eq(shreg[0:32]),
                             wav.color.eq(shreg[32:32 + COLOR_BITS]),
                             wav.ctrl.eq(shreg[37])]
                ready = Signal()
                for r in range(R):
                    with m.If(~port[7] & (port[0:5] == r)):
                        m.d.comb += [self.west[r].valid.eq(1), self.west[r].payload.eq(wav),
                                     ready.eq(self.west[r].ready)]
                for c in range(C):
                    with m.If(port[7] & (port[0:5] == c)):
                        m.d.comb += [self.north[c].valid.eq(1), self.north[c].payload.eq(wav),
                                     ready.eq(self.north[c].ready)]
                with m.If(ready):
                    m.d.sync += accepted.eq(accepted + 1)
                    with m.If(idx == length):
                        reply(3)
                    with m.Else():
                        m.next = "W_READ"
                with m.Elif(stall == self.stall_limit):
                    # The mesh has not taken a wavelet for stall_limit cycles: stop and tell
                    # the host how far we got (it drains the east edge and sends the rest).
                    m.d.sync += stalled.eq(1)
                    bump("stall_aborts")
                    reply(3)
                with m.Else():
                    m.d.sync += stall.eq(stall + 1)

            with m.State("TX_START"):
                m.d.comb += tx_crc.start.eq(1)
                m.d.sync += [hdr.eq(0), body.eq(0)]
                m.next = "TX_HDR"
            with m.State("TX_HDR"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(hdr_bytes)]
                with m.If(self.tx.ready):
                    m.d.comb += tx_crc.valid.eq(hdr >= 2)
                    m.d.sync += hdr.eq(hdr + 1)
                    with m.If(hdr == 4):
                        m.next = "TX_BODY_OR_CRC"
            with m.State("TX_BODY_OR_CRC"):
                m.next = "TX_CRC0"
                with m.If(resp_len != 0):
                    m.next = "TX_BODY"
            with m.State("TX_BODY"):
                bbyte = Signal(8)
                entry = ef.r_data
                with m.Switch(resp_cmd):
                    with m.Case(Cmd.ERROR):
                        m.d.comb += bbyte.eq(Mux(body == 0, err_code, cmd))
                    with m.Case(Cmd.PING | Cmd.REPLY):
                        with m.Switch(body):
                            for i, v in enumerate(self.ping_payload):
                                with m.Case(i):
                                    m.d.comb += bbyte.eq(v)
                    with m.Case(Cmd.WRITE | Cmd.REPLY):
                        m.d.comb += bbyte.eq(Mux(body == 0, accepted[0:8],
                                                 Mux(body == 1, accepted[8:16], stalled)))
                    with m.Case(Cmd.STATUS | Cmd.REPLY):
                        # Four bytes per counter, little-endian; the bytes above
                        # ``status_bits`` are zero.
                        lo = body[0:2] < self.status_bits // 8
                        m.d.comb += bbyte.eq(Mux(lo, held.word_select(body[0:2], 8), 0))
                        with m.Switch(body[2:] + 1):
                            for i, n in enumerate(STATUS_FIELDS[1:], start=1):
                                with m.Case(i):
                                    m.d.comb += next_cnt.eq(cnt[n])
                        with m.If(self.tx.ready & (body[0:2] == 3)):
                            m.d.sync += held.eq(next_cnt)
                    with m.Case(Cmd.READ | Cmd.REPLY):
                        cc = Cat(entry[32:32 + COLOR_BITS], entry[37], Const(0, 2))
                        with m.Switch(ebyte):
                            for i in range(4):
                                with m.Case(i):
                                    m.d.comb += bbyte.eq(entry[8 * i:8 * i + 8])
                            with m.Case(4):
                                m.d.comb += bbyte.eq(cc)
                            with m.Default():
                                m.d.comb += bbyte.eq(entry[38:43])
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(bbyte)]
                with m.If(self.tx.ready):
                    m.d.comb += tx_crc.valid.eq(1)
                    m.d.sync += body.eq(body + 1)
                    with m.If(resp_cmd == (Cmd.READ | Cmd.REPLY)):
                        m.d.sync += ebyte.eq(Mux(ebyte == WAVELET_OUT_BYTES - 1, 0, ebyte + 1))
                        with m.If(ebyte == WAVELET_OUT_BYTES - 1):
                            m.d.comb += ef.r_en.eq(1)
                    with m.If(body + 1 == resp_len):
                        m.next = "TX_CRC0"
            with m.State("TX_CRC0"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc[8:16])]
                with m.If(self.tx.ready):
                    m.next = "TX_CRC1"
            with m.State("TX_CRC1"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc[0:8])]
                with m.If(self.tx.ready):
                    m.next = "HUNT"
        return m
