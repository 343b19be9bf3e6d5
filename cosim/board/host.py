"""The host driver of a board (real or virtual): framed requests over a byte stream.

Three layers, as on hardware:

* a :class:`Transport` moves bytes: :class:`SerialTransport` (pyserial, a board's USB-UART) or
  :class:`SimTransport` (the virtual board: the FPGA top in Verilator, bit-level UART);
* :class:`Board` speaks the bridge's protocol (:mod:`sparktile.hdl.fpga.protocol`): PING,
  WRITE into a west/north edge port, READ the east edge, STATUS;
* on top, the same configuration programs and streams the Verilator benches use
  (:func:`~sparktile.compiler.mapping.compile_gemv`, :func:`~sparktile.compiler.program.
  read_requests`): :meth:`Board.gemv` runs a GEMV exactly as ``sparktile gemv`` does, and
  :class:`BoardBackend` runs the golden model's matmuls on the board.

Every reply is untrusted. Each failure is a :class:`BoardError` (a
:class:`~sparktile.errors.UserError`: one line, exit 2) whose message names the port, the
command and what arrived (hex, truncated to :data:`HEX_BYTES`): :class:`BoardTimeout` (a
:class:`TimeoutError`) when no reply, or only part of one, comes in time; :class:`BridgeError`
when the bridge answers with an error frame (bad CRC, timeout of a half-received frame, ...);
:class:`LinkError` for a reply that is not what the protocol allows (bad CRC, another
command, a length or a field out of range). Loops that wait on the board are bounded
(:data:`MAX_IDLE_WRITES`, the stall limit, the timeouts).
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections import defaultdict

import numpy as np

from sparktile.errors import UserError

from ...hdl.formats import CC_COLOR, RSP_COLOR, Counter
from ...hdl.fpga.protocol import (
    PING_MAGIC,
    PROTOCOL_VERSION,
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
from ...hdl.mesh import MeshShape

__all__ = ["Transport", "SerialTransport", "SimTransport", "Board", "BoardError",
           "BoardTimeout", "BridgeError", "LinkError", "open_transport", "BoardBackend"]


#: WRITEs in a row that the board may answer with accepted = 0 before :meth:`Board.write`
#: gives up (it drains the east edge between them when the board says it stalled).
MAX_IDLE_WRITES = 64

#: Bytes of a bad reply quoted (as hex) in an error message.
HEX_BYTES = 32

#: Length of the PING reply's payload (``hdl.fpga.bridge.ping_reply``): magic, version, rows,
#: cols, sram_kb, acc_depth, max_payload, east_depth, divisor, clk_hz.
PING_BYTES = 19


def quote(data: bytes) -> str:
    """``data`` as hex for an error message, at most :data:`HEX_BYTES` of it."""
    data = bytes(data)
    more = f"... ({len(data)} bytes)" if len(data) > HEX_BYTES else ""
    return (data[:HEX_BYTES].hex() or "nothing") + more


def command_name(cmd: int) -> str:
    try:
        return Cmd(cmd).name
    except ValueError:
        return f"command 0x{cmd:02x}"


class BoardError(UserError, RuntimeError):
    """Something went wrong talking to the board."""


class BoardTimeout(BoardError, TimeoutError):
    """The board did not answer in time."""


class BridgeError(BoardError):
    """The bridge answered with an error frame."""

    def __init__(self, code: int, cmd: int, port: str, payload: bytes = b""):
        self.code = code
        self.cmd = cmd
        try:
            what = ErrorCode(code).name
        except ValueError:
            what = f"unknown error {code}"
        super().__init__(f"{port}: the board rejected {command_name(cmd)} with {what} "
                         f"(reply {quote(payload)})")


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
        from .virtual import build_vboard
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
        what = command_name(cmd)
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
        frame = SYNC + head + body
        if crc16(head + payload_r) != crc:
            raise LinkError(f"{self.t.name}: reply to {what} failed its CRC (got 0x{crc:04x}, "
                            f"computed 0x{crc16(head + payload_r):04x}; frame {quote(frame)})")
        rcmd = head[2]
        if rcmd == Cmd.ERROR:
            if not payload_r:
                raise LinkError(f"{self.t.name}: {what} answered with an empty ERROR payload "
                                f"(frame {quote(frame)})")
            raise BridgeError(payload_r[0], payload_r[1] if len(payload_r) > 1 else cmd,
                              self.t.name, payload_r)
        if rcmd != (cmd | Cmd.REPLY):
            raise LinkError(f"{self.t.name}: {what} answered with {command_name(rcmd)} "
                            f"(0x{rcmd:02x}; frame {quote(frame)}), expected 0x"
                            f"{cmd | Cmd.REPLY:02x}")
        return payload_r

    def _bad(self, what: str, problem: str, payload: bytes) -> LinkError:
        return LinkError(f"{self.t.name}: {what}: {problem} (reply {quote(payload)})")

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
        """What the board says it is (checked: a sparktile bridge of this protocol version,
        a mesh the host can compile for, buffers large enough for one wavelet)."""
        p = self.request(Cmd.PING)
        if len(p) != PING_BYTES:
            raise self._bad("PING", f"reply of {len(p)} bytes, expected {PING_BYTES}", p)
        if p[:2] != PING_MAGIC:
            raise self._bad("PING", f"magic {p[:2].hex()} is not {PING_MAGIC.hex()} "
                                    f"({PING_MAGIC.decode()}): not a sparktile bridge", p)
        if p[2] != PROTOCOL_VERSION:
            raise self._bad("PING", f"protocol version {p[2]}, this host speaks "
                                    f"{PROTOCOL_VERSION}", p)
        info = {
            "version": p[2], "rows": p[3], "cols": p[4],
            "sram_kb": int.from_bytes(p[5:7], "little"),
            "acc_depth": int.from_bytes(p[7:9], "little"),
            "max_payload": int.from_bytes(p[9:11], "little"),
            "east_depth": int.from_bytes(p[11:13], "little"),
            "divisor": int.from_bytes(p[13:15], "little"),
            "clk_hz": int.from_bytes(p[15:19], "little"),
        }
        # (clk_hz may be 0: the virtual board has no clock frequency to state.)
        for name, lo in (("max_payload", 1 + WAVELET_IN_BYTES), ("east_depth", 1),
                         ("divisor", 1)):
            if info[name] < lo:
                raise self._bad("PING", f"{name} {info[name]} is out of range (at least {lo})",
                                p)
        try:
            MeshShape(info["rows"], info["cols"], sram_kb=info["sram_kb"],
                      acc_depth=info["acc_depth"])
        except ValueError as exc:
            raise self._bad("PING", f"not a mesh this host can drive: {exc}", p) from None
        self.info = info
        return info

    def status(self) -> dict:
        """The bridge's counters (:data:`STATUS_FIELDS`)."""
        p = self.request(Cmd.STATUS)
        want = 4 * len(STATUS_FIELDS)
        if len(p) != want:
            raise self._bad("STATUS", f"reply of {len(p)} bytes, expected {want} "
                                      f"({len(STATUS_FIELDS)} counters of 4 bytes)", p)
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
        max_count = min(max_count, 0xFFFF)
        rows = (self.info or self.ping())["rows"]
        p = self.request(Cmd.READ, max_count.to_bytes(2, "little"))
        n, extra = divmod(len(p), WAVELET_OUT_BYTES)
        if extra:
            raise self._bad("READ", f"reply of {len(p)} bytes is not a whole number of "
                                    f"{WAVELET_OUT_BYTES}-byte wavelets", p)
        if n > max_count:
            raise self._bad("READ", f"{n} wavelets in the reply, at most {max_count} asked "
                                    f"for", p)
        got = []
        for i in range(n):
            e = p[WAVELET_OUT_BYTES * i:WAVELET_OUT_BYTES * (i + 1)]
            if e[5] >= rows:
                raise self._bad("READ", f"wavelet {i} comes from east row {e[5]}; the mesh "
                                        f"has rows 0..{rows - 1}", p)
            got.append((e[5], int.from_bytes(e[0:4], "little"), e[4]))
        for row, pay, cc in got:
            self._east[row].append((pay, cc))
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
            what = f"WRITE {side}{index}"
            if len(r) != 3:
                raise self._bad(what, f"reply of {len(r)} bytes, expected 3 (accepted, "
                                      f"stalled)", r)
            accepted, stalled = int.from_bytes(r[0:2], "little"), r[2]
            if accepted > k:
                raise self._bad(what, f"the board says it accepted {accepted} wavelets of {k} "
                                      f"sent", r)
            if stalled > 1:
                raise self._bad(what, f"stalled flag {stalled}, expected 0 or 1", r)
            idle = idle + 1 if accepted == 0 else 0
            if idle > MAX_IDLE_WRITES:
                raise BoardError(f"{self.t.name}: {what}: the board accepted nothing in {idle} "
                                 f"WRITEs in a row (last reply {quote(r)})")
            pos += accepted
            if stalled:
                stalls += 1
                if self.read_east() == 0 and stalls > 8:
                    raise BoardError(f"{self.t.name}: {what}: the mesh stopped taking wavelets "
                                     f"and nothing leaves its east edge (last reply "
                                     f"{quote(r)})")

    def take_east(self, row: int, color: int | None = None) -> list[int]:
        """Payloads received from ``row`` so far (optionally one color), removed."""
        keep, out = [], []
        for pay, cc in self._east[row]:
            (out if color is None or (cc & CC_COLOR) == color else keep).append(pay)
        self._east[row] = keep
        return out

    def wait_east(self, counts: dict[int, tuple[int, int]], timeout: float = 10.0) -> None:
        """Read the east edge until ``counts[row] = (color, n)`` wavelets arrived per row."""
        deadline = time.monotonic() + timeout
        while True:
            done = all(sum(1 for _, cc in self._east[r] if (cc & CC_COLOR) == col) >= n
                       for r, (col, n) in counts.items())
            if done:
                return
            if time.monotonic() > deadline:
                got = {r: sum(1 for _, cc in self._east[r] if (cc & CC_COLOR) == col)
                       for r, (col, _n) in counts.items()}
                raise BoardTimeout(f"{self.t.name}: results incomplete after {timeout:g} s: "
                                   f"expected {counts}, got {got}")
            self.read_east()

    # -- mesh level --
    def configure(self, program) -> None:
        """Send a :class:`~sparktile.compiler.program.ConfigProgram` into the west edges."""
        for r, (pay, ccs) in enumerate(program.row_streams()):
            if len(pay):
                self.write("W", r, pay, ccs)

    def read_counters(self, shape: MeshShape, counters=tuple(Counter)) -> dict[str, np.ndarray]:
        """Per-tile counters (rows x cols arrays) through READ configuration headers."""
        from ...compiler.program import counters_from_responses, read_requests
        for r, (pay, ccs) in enumerate(read_requests(shape, counters)):
            self.write("W", r, pay, ccs)
        n = shape.cols * len(counters) * 2
        self.wait_east({r: (RSP_COLOR, n) for r in range(shape.rows)})
        responses = [self.take_east(r, RSP_COLOR)[:n] for r in range(shape.rows)]
        try:
            return counters_from_responses(shape, counters, responses)
        except ValueError as exc:
            raise LinkError(f"{self.t.name}: READ counters: {exc}") from None

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
        """``y`` of a compiled GEMV (:func:`~sparktile.compiler.mapping.compile_gemv`)."""
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
        from ...compiler.mapping import compile_gemv
        if self._loaded != op.name:
            self._mapping = compile_gemv(self.shape, op.w_q, op.mult, op.shift,
                                         out_int32=(op.out == "int32"))
            self.board.configure(self._mapping.program)
            self._loaded = op.name
            self.loads += 1
        self.ops += 1
        y = self.board.gemv(self._mapping, x_q, configure=False)
        return y.astype(np.int32 if op.out == "int32" else np.int8)
