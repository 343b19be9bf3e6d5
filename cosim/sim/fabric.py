"""Host side of the edge BFMs: queue wavelets, run the simulator to a condition, collect.

:class:`Fabric` lives inside a cocotb test (the simulator process). It talks to the C++ BFMs
of ``bfm.cpp`` through ctypes (the simulator is linked with ``-rdynamic``), and advances
simulated time only by awaiting the harness's ``done`` toggle, so between two transactions
Verilator runs at full speed with no Python in the loop.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import numpy as np

from ...compiler.program import ConfigProgram, counters_from_responses, read_requests
from ...compiler.routes import check_deadlock_free
from ...hdl.formats import CC_COLOR, RSP_COLOR, Counter
from ...hdl.mesh import MeshShape
from .harness import edge_ports, port_index

__all__ = ["Fabric", "RunResult", "FabricHang", "STATUS", "Recording"]

STATUS = {0: "running", 1: "complete", 2: "cycle limit", 3: "hang (no edge activity)"}
#: Seconds of simulation between progress reports of a long configuration.
PROGRESS_S = 5.0

_u32p = ctypes.POINTER(ctypes.c_uint32)
_u8p = ctypes.POINTER(ctypes.c_uint8)
_u64p = ctypes.POINTER(ctypes.c_uint64)


class FabricHang(RuntimeError):
    """The fabric stopped moving before the expected wavelets arrived."""


@dataclass
class RunResult:
    status: int
    start_cycle: int
    end_cycle: int

    @property
    def cycles(self) -> int:
        return self.end_cycle - self.start_cycle

    @property
    def ok(self) -> bool:
        return self.status == 1


def _lib():
    lib = ctypes.CDLL(None)
    sigs = {
        "sparktile_bfm_init": (None, [ctypes.c_int, ctypes.c_uint64]),
        "sparktile_src_push": (None, [ctypes.c_int, _u32p, _u8p, ctypes.c_int]),
        "sparktile_set_pauses": (None, [ctypes.c_int, ctypes.c_double, ctypes.c_double]),
        "sparktile_sink_count": (ctypes.c_int, [ctypes.c_int]),
        "sparktile_sink_pop": (ctypes.c_int, [ctypes.c_int, _u32p, _u8p, _u64p, ctypes.c_int]),
        "sparktile_src_taken_count": (ctypes.c_int, [ctypes.c_int]),
        "sparktile_src_taken_pop": (ctypes.c_int, [ctypes.c_int, _u64p, ctypes.c_int]),
        "sparktile_src_pending": (ctypes.c_int, [ctypes.c_int]),
        "sparktile_arm": (None, [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]),
        "sparktile_status": (ctypes.c_int, []),
        "sparktile_cycle": (ctypes.c_uint64, []),
        "sparktile_wave_enable": (None, [ctypes.c_int]),
        "sparktile_wave_limit": (None, [ctypes.c_uint64]),
        "sparktile_wave_stopped_cycle": (ctypes.c_uint64, []),
        "sparktile_wave_stopped_bytes": (ctypes.c_uint64, []),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


class Fabric:
    """Transaction-level access to a simulated mesh.

    Parameters
    ----------
    dut : cocotb handle
        The harness top (``sparktile_harness``).
    shape : MeshShape
        Geometry the harness was built for.
    seed : int
        Seed of the BFMs' random pauses.
    """

    def __init__(self, dut, shape: MeshShape, seed: int = 1):
        self.dut = dut
        self.shape = shape
        self.ports = edge_ports(shape)
        self.lib = _lib()
        self.lib.sparktile_bfm_init(len(self.ports), seed)
        self._recording: list | None = None
        self._pending_sends: list = []

    # ---- recording (for the plain C++ harness) -------------------------------------------
    def record(self) -> None:
        """Start recording every transaction, to replay it in the plain C++ harness."""
        self._recording = []
        self._pending_sends = []

    def save_recording(self, path) -> int:
        """Write the recorded transactions in ``plain_main.cpp``'s format and stop recording;
        returns the number of phases."""
        import struct
        with open(path, "wb") as f:
            for sends, expect in self._recording or []:
                f.write(struct.pack("<I", len(sends)))
                for port, p, c in sends:
                    f.write(struct.pack("<II", port, len(p)))
                    f.write(p.astype("<u4").tobytes())
                    f.write(c.astype(np.uint8).tobytes())
                f.write(struct.pack("<Q", expect))
        phases = len(self._recording or [])
        self._recording = None
        return phases

    # ---- ports ---------------------------------------------------------------------------
    def port(self, side: str, pos: int) -> int:
        return port_index(self.shape, side, pos)

    def set_pauses(self, port: int, src_idle: float = 0.0, sink_stall: float = 0.0) -> None:
        """Random stalls: a source pauses before each wavelet with probability ``src_idle``;
        a sink drops ready in a cycle with probability ``sink_stall``."""
        self.lib.sparktile_set_pauses(port, src_idle, sink_stall)

    def send(self, port: int, payloads, ccs) -> None:
        p = np.ascontiguousarray(payloads, dtype=np.uint32)
        c = np.ascontiguousarray(ccs, dtype=np.uint8)
        if p.shape != c.shape:
            raise ValueError("payloads and cc must have the same length")
        if self._recording is not None and len(p):
            self._pending_sends.append((port, p.copy(), c.copy()))
        if len(p):
            self.lib.sparktile_src_push(port, p.ctypes.data_as(_u32p), c.ctypes.data_as(_u8p),
                                        len(p))

    def receive(self, port: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Everything delivered on ``port`` since the last call: payloads, cc, cycles."""
        n = self.lib.sparktile_sink_count(port)
        p = np.zeros(n, np.uint32)
        c = np.zeros(n, np.uint8)
        t = np.zeros(n, np.uint64)
        if n:
            self.lib.sparktile_sink_pop(port, p.ctypes.data_as(_u32p), c.ctypes.data_as(_u8p),
                                        t.ctypes.data_as(_u64p), n)
        return p, c, t

    def taken(self, port: int) -> np.ndarray:
        """Cycles at which the mesh took each wavelet sent on ``port`` since the last call."""
        n = self.lib.sparktile_src_taken_count(port)
        t = np.zeros(n, np.uint64)
        if n:
            self.lib.sparktile_src_taken_pop(port, t.ctypes.data_as(_u64p), n)
        return t

    def pending(self, port: int) -> int:
        return self.lib.sparktile_src_pending(port)

    @property
    def cycle(self) -> int:
        return int(self.lib.sparktile_cycle())

    def waves(self, on: bool) -> None:
        self.lib.sparktile_wave_enable(1 if on else 0)

    def wave_limit(self, nbytes: int) -> None:
        """Close the waveform dump once its file reaches ``nbytes`` (0: no limit).

        Verilator ignores ``$dumpoff``, so the BFM closes the trace writer itself; it checks
        the file every 128 cycles, and the writer's buffer lags, so the file ends a little
        past the limit.
        """
        self.lib.sparktile_wave_limit(int(nbytes))

    def wave_stopped(self) -> dict | None:
        """``{"cycle", "bytes"}`` if the dump was closed at the size limit, else ``None``."""
        cycle = int(self.lib.sparktile_wave_stopped_cycle())
        if not cycle:
            return None
        return {"cycle": cycle, "bytes": int(self.lib.sparktile_wave_stopped_bytes())}

    # ---- running -------------------------------------------------------------------------
    async def run(self, expect: int, *, max_cycles: int = 10_000_000,
                  idle_limit: int = 5_000) -> RunResult:
        """Run until ``expect`` more wavelets have left the mesh and every source is empty.

        Returns with ``status`` 2 (cycle limit) or 3 (no edge transfer for ``idle_limit``
        cycles: a hang) otherwise; the caller decides whether that is an error.
        """
        from cocotb.triggers import Edge
        start = self.cycle
        if self._recording is not None:
            self._recording.append((self._pending_sends, int(expect)))
            self._pending_sends = []
        self.lib.sparktile_arm(int(expect), int(max_cycles), int(idle_limit))
        await Edge(self.dut.done)
        return RunResult(int(self.lib.sparktile_status()), start, self.cycle)

    async def _run_reporting(self, expect: int, sinks: list[int], max_cycles: int,
                             every_s: float, report) -> RunResult:
        """:meth:`run` in slices of about ``every_s`` seconds, calling ``report(cycles,
        cycles_per_s)`` after each; ``expect`` wavelets must reach ``sinks``. A replay file
        records one phase, as :meth:`run` would."""
        from cocotb.triggers import Edge
        start = self.cycle
        if self._recording is not None:
            self._recording.append((self._pending_sends, int(expect)))
            self._pending_sends = []
        before = sum(self.lib.sparktile_sink_count(p) for p in sinks)
        chunk, t_start = 2_000, time.perf_counter()
        while True:
            delivered = sum(self.lib.sparktile_sink_count(p) for p in sinks) - before
            left = max_cycles - (self.cycle - start)
            t0 = time.perf_counter()
            self.lib.sparktile_arm(int(expect - delivered), int(min(chunk, left)), 5_000)
            await Edge(self.dut.done)
            status = int(self.lib.sparktile_status())
            if status != 2 or self.cycle - start >= max_cycles:
                return RunResult(status, start, self.cycle)
            wall = time.perf_counter() - t0
            chunk = int(min(max(chunk * every_s / max(wall, 1e-3), 1_000), 10_000_000))
            elapsed = time.perf_counter() - t_start
            report(self.cycle - start, (self.cycle - start) / elapsed if elapsed else 0.0)

    async def settle(self, cycles: int = 4) -> None:
        """Let ``cycles`` clock cycles pass."""
        from cocotb.triggers import Edge
        self.lib.sparktile_arm(1 << 62, int(cycles), 0)
        await Edge(self.dut.done)

    # ---- configuration -------------------------------------------------------------------
    async def configure(self, program: ConfigProgram, *, max_cycles: int = 50_000_000,
                        progress=None, progress_s: float = PROGRESS_S) -> int:
        """Stream ``program`` into the west edges and wait until every row has applied it.

        A counter read of each row's east-most tile follows the row's stream; configuration
        wavelets apply in order along a row, so its response is the fence. Returns the cycles
        the configuration took.

        ``progress``, when given, is called about every ``progress_s`` seconds of simulation
        with ``{"phase": "configure", "taken": wavelets the mesh has taken,
        "wavelets": of how many, "cycles": so far, "sim_cycles_per_s"}`` (a 32x32 mesh of
        cores takes hundreds of thousands of cycles to configure, minutes of simulation).

        Raises
        ------
        RouteError
            Before anything is sent, when the program's routes can deadlock (a cycle in
            their channel-dependency graph, :func:`~sparktile.compiler.routes.
            check_deadlock_free`).
        """
        check_deadlock_free(program)
        start = self.cycle
        streams = program.row_streams()
        fence = read_requests(self.shape, counters=(Counter.CYCLES,))
        for r, (p, c) in enumerate(streams):
            port = self.port("W", r)
            self.send(port, p, c)
            # Only the last column's read: header col = cols - 1, low half.
            fp, fc = fence[r]
            self.send(port, fp[-2:-1], fc[-2:-1])
        if progress is None:
            result = await self.run(self.shape.rows, max_cycles=max_cycles)
        else:
            ports = [self.port("W", r) for r in range(self.shape.rows)]
            total = sum(len(p) + 1 for p, _c in streams)
            result = await self._run_reporting(
                self.shape.rows, [self.port("E", r) for r in range(self.shape.rows)],
                max_cycles, progress_s, lambda cycles, rate: progress({
                    "phase": "configure", "taken": total - sum(map(self.pending, ports)),
                    "wavelets": total, "cycles": cycles, "sim_cycles_per_s": rate}))
        if not result.ok:
            raise FabricHang(f"configuration did not complete: {STATUS[result.status]} "
                             f"after {result.cycles} cycles")
        for r in range(self.shape.rows):
            p, c, _ = self.receive(self.port("E", r))
            if not np.all((c & CC_COLOR) == RSP_COLOR):
                raise FabricHang(f"unexpected wavelets on the east edge of row {r} during "
                                 f"configuration: colors {sorted(set((c & CC_COLOR).tolist()))}")
        return self.cycle - start

    async def read_counters(self, counters=tuple(Counter)) -> dict[str, np.ndarray]:
        """Read ``counters`` of every tile through the fabric; returns name -> (rows, cols)."""
        reqs = read_requests(self.shape, counters)
        total = 0
        for r, (p, c) in enumerate(reqs):
            self.send(self.port("W", r), p, c)
            total += len(p)
        result = await self.run(total)
        if not result.ok:
            raise FabricHang(f"counter read did not complete: {STATUS[result.status]}")
        responses = []
        for r in range(self.shape.rows):
            p, c, _ = self.receive(self.port("E", r))
            responses.append(p[(c & CC_COLOR) == RSP_COLOR].tolist())
        return counters_from_responses(self.shape, counters, responses)

    def counter_delta(self, after: dict, before: dict) -> dict[str, np.ndarray]:
        """``after - before`` for the counters read both times, modulo the counters' width
        (``shape.counter_bits``: 16 on small FPGA tiles); right for windows shorter than one
        wrap."""
        wrap = np.uint64((1 << self.shape.counter_bits) - 1)
        return {k: (after[k] - before[k]) & wrap for k in before if k in after}



class Recording:
    """Records a bench's whole workload for the plain C++ harness, and what it cost here.

    ``finish()`` writes the file and returns the cycles simulated and the wall time spent
    (Python included) since the recording started, or ``None`` when not recording; also the
    CPU time this process spent (the simulator and Python, every thread): on a machine
    shared with other jobs the wall time measures the load, the CPU time the work, so a
    comparison with the plain harness on a loaded machine uses ``cycles_per_cpu_s``.
    """

    def __init__(self, fabric: Fabric, path: str | None):
        import time
        self.fabric = fabric
        self.path = path
        if path:
            fabric.record()
            self.cycle0 = fabric.cycle
            self.t0 = time.perf_counter()
            self.cpu0 = time.process_time()

    def finish(self) -> dict | None:
        import time
        if not self.path:
            return None
        wall = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        cycles = self.fabric.cycle - self.cycle0
        phases = self.fabric.save_recording(self.path)
        return {"phases": phases, "cycles": cycles, "wall_s": wall,
                "cycles_per_s": cycles / wall if wall else 0.0,
                "cpu_s": cpu, "cycles_per_cpu_s": cycles / cpu if cpu else 0.0}
