"""The FPGA top: a mesh, the host bridge and a UART; the same design on a board and in the
virtual board (Verilator).

:class:`FpgaTop` has plain pins (``uart_rx``, ``uart_tx``) and runs in the ``sync`` domain;
:class:`BoardTop` puts it on an Amaranth platform (the board's USB-UART and a heartbeat LED).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ..mesh import Mesh, MeshShape
from .bridge import HostBridge
from .uart import UartRx, UartTx, check_divisor

__all__ = ["FpgaTop", "BoardTop", "FPGA_TOP"]

#: Module name of the top in generated Verilog (the virtual board).
FPGA_TOP = "sparktile_fpga"


class FpgaTop(wiring.Component):
    """Mesh + host bridge + UART.

    Parameters
    ----------
    shape : MeshShape
        The mesh.
    divisor : int
        UART clocks per bit (``clk_hz // baud`` on a board, 4 in the virtual board).
    clk_hz : int
        Fabric clock, reported to the host by PING.
    max_payload, east_depth : int
        Bridge buffer sizes (see :class:`~.bridge.HostBridge`).
    frame_timeout, stall_limit : int, optional
        In cycles; default 64 and 4096 byte times.
    status_bits : int
        Width of the bridge's STATUS counters (16 or 32).
    tile_module : str, optional
        Instantiate this external tile module at every mesh position (see
        :class:`~sparktile.hdl.mesh.Mesh`); for the virtual board's Verilator build.

    Members
    -------
    uart_rx : In(1)
        From the host (idle high).
    uart_tx : Out(1)
        To the host.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)

    def __init__(self, shape: MeshShape, *, divisor: int, clk_hz: int = 0,
                 max_payload: int = 1024, east_depth: int = 512,
                 frame_timeout: int | None = None, stall_limit: int | None = None,
                 status_bits: int = 32, tile_module: str | None = None):
        if not isinstance(shape, MeshShape):
            raise TypeError(f"FpgaTop needs a MeshShape, not {shape!r}")
        self.shape = shape
        # The virtual board's Verilator build instantiates one external tile module (see
        # Mesh); bitstreams keep the elaborated tiles.
        self.tile_module = tile_module
        self.divisor = check_divisor(divisor)
        byte_time = 10 * self.divisor
        self.bridge_args = dict(
            rows=shape.rows, cols=shape.cols, sram_kb=shape.sram_kb, acc_depth=shape.acc_depth,
            max_payload=max_payload,
            east_depth=east_depth, divisor=self.divisor, clk_hz=clk_hz,
            # A frame's bytes arrive back to back from a PC; 64 byte times of silence is far
            # beyond a USB-serial adapter's gaps on a board only when the baud rate is high, so
            # boards pass an explicit, longer timeout (see boards.py).
            frame_timeout=frame_timeout or 64 * byte_time,
            stall_limit=stall_limit or 4096 * byte_time, status_bits=status_bits)
        # Validate now (constructor errors name the bad value).
        HostBridge.check_params(**self.bridge_args)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.mesh = mesh = Mesh(self.shape, tile_module=self.tile_module)
        m.submodules.bridge = bridge = HostBridge(**self.bridge_args)
        m.submodules.uart_rx = rx = UartRx(self.divisor)
        m.submodules.uart_tx = tx = UartTx(self.divisor)
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx),
                     bridge.rx_data.eq(rx.data), bridge.rx_strobe.eq(rx.strobe)]
        wiring.connect(m, bridge.tx, tx.i)
        R, C = self.shape.rows, self.shape.cols
        for r in range(R):
            wiring.connect(m, bridge.west[r], mesh.west_in[r])
            wiring.connect(m, mesh.east_out[r], bridge.east[r])
        for c in range(C):
            wiring.connect(m, bridge.north[c], mesh.north_in[c])
        # Outputs nobody listens to are drained (a GEMV never uses them; a misrouted wavelet
        # must not back up into the fabric) and counted.
        drops = 0
        for port in [*mesh.north_out, *mesh.south_out, *mesh.west_out]:
            m.d.comb += port.ready.eq(1)
            drops = drops + port.valid
        m.d.comb += bridge.edge_drops.eq(drops)
        return m


class BoardTop(wiring.Component):
    """:class:`FpgaTop` on a board: its USB-UART, and LED 0 blinking at ~1.5 Hz.

    The fabric runs from the board's default clock (``platform.default_clk``), whose real
    frequency is ``clk_hz`` (the UART divisor is computed from it; the build may constrain
    the clock higher to measure Fmax against a target).
    """

    def __init__(self, shape: MeshShape, *, clk_hz: int, baud: int,
                 frame_timeout_s: float = 0.05, **kwargs):
        self.shape = shape
        self.clk_hz = int(clk_hz)
        self.baud = baud
        self.frame_timeout_s = frame_timeout_s
        self.kwargs = kwargs
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        clk_hz = self.clk_hz
        divisor = clk_hz // self.baud
        top = FpgaTop(self.shape, divisor=divisor, clk_hz=clk_hz,
                      frame_timeout=int(clk_hz * self.frame_timeout_s), **self.kwargs)
        m.submodules.top = top
        # Raw pins and explicit buffers (Amaranth 0.5: ``request`` with ``dir="-"``).
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buffer = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [top.uart_rx.eq(rx_buf.i), tx_buf.o.eq(top.uart_tx)]
        led = platform.request("led", 0, dir="-")
        m.submodules.led_buffer = led_buf = io.Buffer("o", led)
        beat = Signal(range(clk_hz // 3 + 1))
        on = Signal()
        with m.If(beat == clk_hz // 3):
            m.d.sync += [beat.eq(0), on.eq(~on)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)
        m.d.comb += led_buf.o.eq(on)
        return m
