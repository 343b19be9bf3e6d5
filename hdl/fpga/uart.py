"""8N1 UART receiver and transmitter with a fixed clocks-per-bit divisor.

The divisor is a parameter so that the virtual board (Verilator) can run the link at 4 clocks
per bit while a board runs it at ``clk_hz / baud``; the logic is the same.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "check_divisor"]


def check_divisor(divisor) -> int:
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not 4 <= divisor <= 65535:
        raise ValueError(f"UART divisor (clocks per bit) must be an integer in [4, 65535], "
                         f"not {divisor!r}")
    return divisor


class UartRx(wiring.Component):
    """UART receiver: samples each bit in its middle, after a two-flop synchronizer.

    A UART cannot be stalled, so the output is a one-cycle strobe, not a stream.

    Members
    -------
    rx : In(1)
        The line (idle high).
    data : Out(8)
        The byte received, valid while ``strobe`` is high.
    strobe : Out(1)
        A byte arrived with a good stop bit.
    frame_error : Out(1)
        A byte arrived with a bad stop bit (dropped; the receiver waits for the line to go
        idle before hunting for the next start bit).
    """

    rx: In(1, init=1)
    data: Out(8)
    strobe: Out(1)
    frame_error: Out(1)

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        sync1 = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]  # metastability: two flops
        cnt = Signal(range(self.divisor))
        bit = Signal(range(8))
        shreg = Signal(8)
        m.d.comb += self.data.eq(shreg)
        with m.FSM(name="uart_rx"):
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += cnt.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(cnt == 0):
                    with m.If(~line):
                        m.d.sync += [cnt.eq(self.divisor - 1), bit.eq(0)]
                        m.next = "DATA"
                    with m.Else():
                        m.next = "IDLE"   # a glitch, not a start bit
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("DATA"):
                with m.If(cnt == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), cnt.eq(self.divisor - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("STOP"):
                with m.If(cnt == 0):
                    with m.If(line):
                        m.d.comb += self.strobe.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """UART transmitter.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; taken when the previous byte's stop bit has been sent.
    tx : Out(1)
        The line (idle high).
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        cnt = Signal(range(self.divisor))
        m.d.comb += self.i.ready.eq(bits == 0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), bits.eq(10),
                         cnt.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(cnt == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1),
                             cnt.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += cnt.eq(cnt - 1)
        # Registered, so the pin is driven by a flop (no glitches on the board's line).
        m.d.sync += self.tx.eq(Mux(bits != 0, shreg[0], 1))
        return m
