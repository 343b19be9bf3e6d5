"""The host driver of a board (real or virtual): framed requests over a byte stream.

Three layers, as on hardware:

* a :class:`Transport` moves bytes: :class:`SerialTransport` (pyserial, a board's USB-UART) or
  :class:`SimTransport` (the virtual board: the FPGA top in Verilator, bit-level UART);
* :class:`Board` speaks the bridge's protocol (:mod:`sparktile.hdl.fpga.protocol`): PING,
  WRITE into a west/north edge port, READ the east edge, STATUS;
* on top, the same configuration programs and streams the Verilator benches use
  (:func:`~sparktile.cosim.mapping.compile_gemv`, :func:`~sparktile.cosim.program.
  read_requests`): :meth:`Board.gemv` runs a GEMV exactly as ``sparktile gemv`` does, and
  :class:`BoardBackend` runs the golden model's matmuls on the board.

Errors: :class:`BoardTimeout` (a :class:`TimeoutError`) when no reply comes, naming the port
and the timeout; :class:`BridgeError` when the bridge answers with an error frame (bad CRC,
timeout of a half-received frame, ...); :class:`LinkError` for a reply that is not a valid
frame.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections import defaultdict

import numpy as np

from sparktile.errors import UserError

from ..hdl.fpga.protocol import (
    STATUS_FIELDS,
    SYNC,
    WAVELET_IN_BYTES,
    WAVELET_OUT_BYTES,
    Cmd,
    ErrorCode,
    crc16,
    encode_frame,
    port_code,
)
from ..hdl.mesh import MeshShape
from ..hdl.wavelet import RSP_COLOR, Counter, decode_response

__all__ = ["Transport", "SerialTransport", "SimTransport", "Board", "BoardError",
           "BoardTimeout", "BridgeError", "LinkError", "open_transport", "BoardBackend"]


#: WRITEs in a row that the board may answer with accepted = 0 before :meth:`Board.write`
#: gives up (it drains the east edge between them when the board says it stalled).
MAX_IDLE_WRITES = 64


class BoardError(UserError, RuntimeError):
    """Something went wrong talking to the board."""


class BoardTimeout(BoardError, TimeoutError):
    """The board did not answer in time."""


class BridgeError(BoardError):
    """The bridge answered with an error frame."""

    def __init__(self, code: int, cmd: int, port: str):
        self.code = code
        self.cmd = cmd
        try:
            what = ErrorCode(code).name
        except ValueError:
            what = f"unknown error {code}"
        super().__init__(f"{port}: the board rejected command 0x{cmd:02x} with {what}")


class LinkError(BoardError):
    """A reply that is not a valid frame (bad CRC, unexpected command)."""


# ---- transports ---------------------------------------------------------------------------

class Transport:
    """A byte stream to a board. ``read`` returns what arrived within ``timeout`` seconds
    (possibly fewer than ``n`` bytes, possibly none)."""

    name = "?"

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A board's USB-UART through pyserial (``pip install pyserial``)."""

    def __init__(self, port: str, baud: int):
        try:
            import serial
        except ImportError as exc:
            raise BoardError(f"talking to {port} needs pyserial: pip install pyserial "
                             f"(or pip install 'sparktile[fpga]')") from exc
        self.name = port
        try:
            self._s = serial.Serial(port, baud, timeout=0)
        except (OSError, serial.SerialException) as exc:
            raise BoardError(f"cannot open {port}: {exc}") from exc
        self._s.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._s.write(data)
        self._s.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self._s.timeout = max(timeout, 0.0)
        return self._s.read(n)

    def close(self) -> None:
        self._s.close()


class SimTransport(Transport):
    """The virtual board: the FPGA top in Verilator, reached through its UART model.

    Parameters
    ----------
    shape : MeshShape
        The mesh inside the simulated FPGA top.
    **bridge
        Bridge parameters that differ from the virtual board's defaults (``max_payload``,
        ``east_depth``, ``status_bits``: a board's own values, see ``hdl/fpga/boards.py``).
    """

    def __init__(self, shape: MeshShape, **bridge):
        from .vboard import build_vboard
        self.build = build_vboard(shape, **bridge)
        self.name = f"sim ({shape} virtual board)"
        env = dict(os.environ, SPARKTILE_UART_DIVISOR=str(self.build.divisor))
        self._p = subprocess.Popen([str(self.build.executable)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=env, bufsize=0)
        self._out = self._p.stdout.fileno()

    def write(self, data: bytes) -> None:
        if self._p.poll() is not None:
            raise BoardError(f"{self.name}: the simulator exited ({self._p.returncode})")
        self._p.stdin.write(data)
        self._p.stdin.flush()

    def read(self, n: int, timeout: float) -> bytes:
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self._out], [], [], left)
            if not ready:
                break
            chunk = os.read(self._out, n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        if self._p.poll() is None:
            self._p.stdin.close()
            try:
                self._p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._p.kill()
                self._p.wait()
        self._p.stdout.close()


def open_transport(port: str, *, shape: MeshShape | None = None, baud: int = 1_000_000,
                   bridge: dict | None = None):
    """``"sim"`` -> :class:`SimTransport` (needs ``shape``; ``bridge`` parameters go to the
    simulated bridge), else :class:`SerialTransport`."""
    if port == "sim":
        if shape is None:
            raise ValueError("the virtual board needs a mesh shape")
        return SimTransport(shape, **(bridge or {}))
    return SerialTransport(port, baud)


# ---- protocol -----------------------------------------------------------------------------

class Board:
    """The bridge's protocol over a :class:`Transport`.

    Parameters
    ----------
    transport : Transport
    timeout : float
        Seconds to wait for each reply.
    """

    def __init__(self, transport: Transport, *, timeout: float = 2.0):
        self.t = transport
        self.timeout = timeout
        self.info: dict | None = None
        self._got = b""
        self._east: dict[int, list[tuple[int, int]]] = defaultdict(list)   # row -> (pay, cc)

    # -- frames --
    def _read_exact(self, n: int, deadline: float, what: str) -> bytes:
        out = b""
        while len(out) < n:
            left = deadline - time.monotonic()
            chunk = self.t.read(n - len(out), max(left, 0.0)) if left > 0 else b""
            if not chunk and time.monotonic() >= deadline:
                got = self._got + out
                if got:
                    raise BoardTimeout(
                        f"{self.t.name}: reply to {what} incomplete after {self.timeout:g} s: "
                        f"{len(got)} bytes arrived ({got[:32].hex()}"
                        f"{'...' if len(got) > 32 else ''})")
                raise BoardTimeout(
                    f"{self.t.name}: no reply to {what} within {self.timeout:g} s; is the "
                    f"board programmed, the port right, the baud rate right?")
            out += chunk
        self._got += out
        return out

    def request(self, cmd: int, payload: bytes = b"", *, raw: bytes | None = None) -> bytes:
        """Send one frame (or ``raw`` bytes instead of it) and return the reply's payload.

        Raises
        ------
        BoardTimeout, BridgeError, LinkError
        """
        what = f"command 0x{cmd:02x}"
        self.t.write(encode_frame(cmd, payload) if raw is None else raw)
        deadline = time.monotonic() + self.timeout
        self._got = b""
        # Hunt for the sync bytes (skipping anything before them).
        prev = None
        while True:
            b = self._read_exact(1, deadline, what)[0]
            if prev == SYNC[0] and b == SYNC[1]:
                break
            prev = b
        head = self._read_exact(3, deadline, what)
        length = int.from_bytes(head[0:2], "little")
        body = self._read_exact(length + 2, deadline, what)
        payload_r, crc = body[:-2], int.from_bytes(body[-2:], "big")
        if crc16(head + payload_r) != crc:
            raise LinkError(f"{self.t.name}: reply to {what} failed its CRC")
        rcmd = head[2]
        if rcmd == Cmd.ERROR:
            if not payload_r:
                raise LinkError(f"{self.t.name}: {what} answered with an empty ERROR payload")
            raise BridgeError(payload_r[0], payload_r[1] if len(payload_r) > 1 else cmd,
                              self.t.name)
        if rcmd != (cmd | Cmd.REPLY):
            raise LinkError(f"{self.t.name}: {what} answered with command 0x{rcmd:02x}")
        return payload_r

    def shape(self) -> MeshShape:
        """The board's mesh, from PING."""
        info = self.info or self.ping()
        return MeshShape(info["rows"], info["cols"], sram_kb=info["sram_kb"],
                         acc_depth=info["acc_depth"])

    def resync(self, quiet: float = 0.05) -> int:
        """Discard whatever the board still sends (after an error); returns bytes dropped."""
        dropped = 0
        while True:
            chunk = self.t.read(4096, quiet)
            if not chunk:
                return dropped
            dropped += len(chunk)

    # -- commands --
    def ping(self) -> dict:
        p = self.request(Cmd.PING)
        if len(p) < 19:
            raise LinkError(f"{self.t.name}: PING reply of {len(p)} bytes ({p[:32].hex()}), "
                            f"expected at least 19")
        if p[:2] != b"ST":
            raise LinkError(f"{self.t.name}: PING reply {p!r} is not from a sparktile bridge")
        self.info = {
            "version": p[2], "rows": p[3], "cols": p[4],
            "sram_kb": int.from_bytes(p[5:7], "little"),
            "acc_depth": int.from_bytes(p[7:9], "little"),
            "max_payload": int.from_bytes(p[9:11], "little"),
            "east_depth": int.from_bytes(p[11:13], "little"),
            "divisor": int.from_bytes(p[13:15], "little"),
            "clk_hz": int.from_bytes(p[15:19], "little"),
        }
        return self.info

    def status(self) -> dict:
        p = self.request(Cmd.STATUS)
        return {name: int.from_bytes(p[4 * i:4 * i + 4], "little")
                for i, name in enumerate(STATUS_FIELDS)}

    @property
    def max_payload(self) -> int:
        if self.info is None:
            self.ping()
        return self.info["max_payload"]

    def read_east(self, max_count: int = 0xFFFF) -> int:
        """Pop wavelets that left the east edge into the host's per-row queues; returns how
        many arrived."""
        p = self.request(Cmd.READ, min(max_count, 0xFFFF).to_bytes(2, "little"))
        n = len(p) // WAVELET_OUT_BYTES
        for i in range(n):
            e = p[WAVELET_OUT_BYTES * i:WAVELET_OUT_BYTES * (i + 1)]
            self._east[e[5]].append((int.from_bytes(e[0:4], "little"), e[4]))
        return n

    def write(self, side: str, index: int, payloads, ccs) -> None:
        """Send wavelets into edge port ``side`` (``"W"`` or ``"N"``) ``index``.

        If the mesh stops taking them (its east edge is full), drain the east edge and
        send the rest.
        """
        code = port_code(side, index)
        per = (self.max_payload - 1) // WAVELET_IN_BYTES
        if per < 1:
            raise LinkError(f"{self.t.name}: WRITE: the bridge's max_payload {self.max_payload} "
                            f"is too small for one wavelet (needs >= {1 + WAVELET_IN_BYTES})")
        idle = 0
        pay = np.asarray(payloads, dtype=np.uint32)
        ccs = np.asarray(ccs, dtype=np.uint8)
        pos = 0
        stalls = 0
        while pos < len(pay):
            k = min(per, len(pay) - pos)
            raw = np.zeros((k, WAVELET_IN_BYTES), dtype=np.uint8)
            raw[:, 0:4] = pay[pos:pos + k].view(np.uint8).reshape(k, 4)
            raw[:, 4] = ccs[pos:pos + k]
            r = self.request(Cmd.WRITE, bytes([code]) + raw.tobytes())
            if len(r) < 3:
                raise LinkError(f"{self.t.name}: WRITE {side}{index}: reply of {len(r)} bytes "
                                f"({r[:32].hex()}), expected 3 (accepted, stalled)")
            accepted, stalled = int.from_bytes(r[0:2], "little"), r[2]
            if accepted > k:
                raise LinkError(f"{self.t.name}: WRITE {side}{index}: the board says it accepted "
                                f"{accepted} wavelets of {k} sent (reply {r[:32].hex()})")
            idle = idle + 1 if accepted == 0 else 0
            if idle > MAX_IDLE_WRITES:
                raise BoardError(f"{self.t.name}: WRITE {side}{index}: the board accepted nothing "
                                 f"in {idle} WRITEs in a row (last reply {r[:32].hex()})")
            pos += accepted
            if stalled:
                stalls += 1
                if self.read_east() == 0 and stalls > 8:
                    raise BoardError(f"{self.t.name}: the mesh stopped taking wavelets on "
                                     f"{side}{index} and nothing leaves its east edge")

    def take_east(self, row: int, color: int | None = None) -> list[int]:
        """Payloads received from ``row`` so far (optionally one color), removed."""
        keep, out = [], []
        for pay, cc in self._east[row]:
            (out if color is None or (cc & 0x1F) == color else keep).append(pay)
        self._east[row] = keep
        return out

    def wait_east(self, counts: dict[int, tuple[int, int]], timeout: float = 10.0) -> None:
        """Read the east edge until ``counts[row] = (color, n)`` wavelets arrived per row."""
        deadline = time.monotonic() + timeout
        while True:
            done = all(sum(1 for _, cc in self._east[r] if (cc & 0x1F) == col) >= n
                       for r, (col, n) in counts.items())
            if done:
                return
            if time.monotonic() > deadline:
                got = {r: sum(1 for _, cc in self._east[r] if (cc & 0x1F) == col)
                       for r, (col, _n) in counts.items()}
                raise BoardTimeout(f"{self.t.name}: results incomplete after {timeout:g} s: "
                                   f"expected {counts}, got {got}")
            self.read_east()

    # -- mesh level --
    def configure(self, program) -> None:
        """Send a :class:`~sparktile.cosim.program.ConfigProgram` into the west edges."""
        for r, (pay, ccs) in enumerate(program.row_streams()):
            if len(pay):
                self.write("W", r, pay, ccs)

    def read_counters(self, shape: MeshShape, counters=tuple(Counter)) -> dict[str, np.ndarray]:
        """Per-tile counters (rows x cols arrays) through READ configuration headers."""
        from .program import read_requests
        for r, (pay, ccs) in enumerate(read_requests(shape, counters)):
            self.write("W", r, pay, ccs)
        n = shape.cols * len(counters) * 2
        self.wait_east({r: (RSP_COLOR, n) for r in range(shape.rows)})
        out = {Counter(k).name.lower(): np.zeros((shape.rows, shape.cols), dtype=np.int64)
               for k in counters}
        for r in range(shape.rows):
            for p in self.take_east(r, RSP_COLOR)[:n]:
                col, addr, value = decode_response(p)
                name = Counter(addr >> 1).name.lower()
                out[name][r, col] += value << (16 * (addr & 1))
        return out

    def run_x(self, mapping, x) -> None:
        """Send a GEMV's activation streams, column by column one vector at a time, so that
        no column's write waits on a column the host has not fed yet."""
        streams = mapping.x_streams(x)
        batch = np.atleast_2d(x).shape[0]
        nw = mapping.nw_pe
        pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for col, (pay, ccs) in streams.items():
            out, pos = [], 0
            for _ in mapping.passes:
                for b in range(batch):
                    k = nw + (1 if b == 0 else 0)     # the pass's descriptor goes first
                    out.append((pay[pos:pos + k], ccs[pos:pos + k]))
                    pos += k
            pieces[col] = out
        # Results collect in the bridge's east FIFO; drain it before it can fill, so the mesh
        # never stalls on its east edge (a stalled WRITE costs the bridge's stall limit).
        per_vector = mapping.y_wavelets_per_row(1) * mapping.region.rows
        depth = (self.info or self.ping())["east_depth"]
        pending = 0
        for i in range(len(next(iter(pieces.values())))):
            if pending + per_vector > depth // 2:
                self.read_east()
                pending = 0
            for col, out in pieces.items():
                self.write("N", col, *out[i])
            pending += per_vector

    def gemv(self, mapping, x, *, configure: bool = True, timeout: float = 60.0) -> np.ndarray:
        """``y`` of a compiled GEMV (:func:`~sparktile.cosim.mapping.compile_gemv`)."""
        batch = np.atleast_2d(x).shape[0]
        if configure:
            self.configure(mapping.program)
        self.run_x(mapping, x)
        n = mapping.y_wavelets_per_row(batch)
        rows = range(mapping.region.row, mapping.region.row + mapping.region.rows)
        self.wait_east({r: (mapping.colors.y, n) for r in rows}, timeout=timeout)
        per_row = {r: np.array(self.take_east(r, mapping.colors.y)[:n], dtype=np.uint32)
                   for r in rows}
        return mapping.decode_y(per_row, batch)


class BoardBackend:
    """Runs the golden model's :class:`~sparktile.golden_model.backend.MatmulOp` s on a board.

    The mesh's SRAM holds one op at a time: an op is loaded when it differs from the last one
    (weights travel over the link, so a token of a model larger than the mesh costs a full
    weight upload).
    """

    name = "board"

    def __init__(self, board: Board, shape: MeshShape):
        self.board = board
        self.shape = shape
        self._loaded = None
        self._mapping = None
        self.ops = 0
        self.loads = 0

    def matmul(self, op, x_q):
        from .mapping import compile_gemv
        if self._loaded != op.name:
            self._mapping = compile_gemv(self.shape, op.w_q, op.mult, op.shift,
                                         out_int32=(op.out == "int32"))
            self.board.configure(self._mapping.program)
            self._loaded = op.name
            self.loads += 1
        self.ops += 1
        y = self.board.gemv(self._mapping, x_q, configure=False)
        return y.astype(np.int32 if op.out == "int32" else np.int8)
