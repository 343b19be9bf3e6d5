"""issue 17: the FPGA host's reply parser fed random and mutated replies.

A fake board answers every request the host sends (PING, STATUS, READ, WRITE) with a reply that
Hypothesis draws: the correct reply, that reply mutated (bits flipped, bytes cut, inserted,
replaced, the length field or CRC rewritten to match the damage), another command's reply,
random bytes or nothing. Whatever arrives, :class:`~sparktile.cosim.board.host.Board` either
returns a sane answer or raises a :class:`~sparktile.cosim.board.host.BoardError`; no other
exception, no hang (a time bound per example), no wavelets invented. The verdict is checked
against :func:`protocol_allows`, the protocol's rules written apart from the host: the host
answers exactly when every reply it received was one the protocol allows, so the property
fails both for a host that takes a bad reply and for one that refuses a good one.

Default tier: :data:`DEFAULT_EXAMPLES` sequences, derandomized. Long tier (``pytest -m fuzz
tests/test_fuzz_board.py``): :data:`LONG_EXAMPLES`.
"""

from __future__ import annotations

from unittest import mock

import pytest
from fuzzing import run_long, time_limit
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from sparktile.cosim.board.host import Board, BoardError, Transport
from sparktile.hdl.fpga.bridge import ping_reply
from sparktile.hdl.fpga.protocol import (
    PING_MAGIC,
    PROTOCOL_VERSION,
    STATUS_FIELDS,
    SYNC,
    WAVELET_IN_BYTES,
    WAVELET_OUT_BYTES,
    Cmd,
    crc16,
    encode_frame,
)
from sparktile.hdl.mesh import MeshShape

DEFAULT_EXAMPLES = 300
LONG_EXAMPLES = 100_000
TIME_LIMIT_S = 5.0
#: The long tier runs for an hour beside other jobs, where a stalled machine can hold one
#: example past 5 s (seen in the GGUF long run); a hang is unbounded, 30 s still catches one.
LONG_TIME_LIMIT_S = 30.0
#: Requests per example whose reply Hypothesis chooses; later ones get the correct reply, so
#: the host's bounded loops (MAX_IDLE_WRITES, the stall limit) end either way.
DRAWN_REPLIES = 24
ROWS, COLS = 2, 3
PING = ping_reply(rows=ROWS, cols=COLS, sram_kb=4, acc_depth=32, max_payload=64,
                  east_depth=64, divisor=4, clk_hz=50_000_000)

_COMMON = dict(deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DEFAULT = settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_COMMON)
LONG = settings(max_examples=LONG_EXAMPLES, **_COMMON)




def _event(what: str) -> None:
    if currently_in_test_context():
        event(what)


def correct_body(cmd: int, payload: bytes, east: list[tuple[int, int, int]] = ()) -> bytes:
    """The payload a healthy bridge sends back for one request (``east``: the (payload, cc,
    row) wavelets waiting on the east edge, for a READ)."""
    if cmd == Cmd.PING:
        return PING
    if cmd == Cmd.STATUS:
        return bytes(4 * len(STATUS_FIELDS))
    if cmd == Cmd.READ:
        want = int.from_bytes(payload[:2], "little")
        return b"".join(pay.to_bytes(4, "little") + bytes([cc, row])
                        for pay, cc, row in list(east)[:want])
    if cmd == Cmd.WRITE:
        k = (len(payload) - 1) // WAVELET_IN_BYTES
        return k.to_bytes(2, "little") + b"\0"
    raise AssertionError(f"the host sent an unknown command 0x{cmd:02x}")


def correct_reply(cmd: int, payload: bytes, east=()) -> bytes:
    return encode_frame(cmd | Cmd.REPLY, correct_body(cmd, payload, east))


_east = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255),
                           st.integers(0, ROWS - 1)), max_size=6)


@st.composite
def mutated_bytes(draw, data: bytes) -> bytes:
    """``data`` damaged in one to three places."""
    out = bytearray(data)
    # Mostly one change: a reply broken in one place is the hardest to tell from a good one.
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "replace", "truncate", "set",
                                     "set", "repeat"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "set" and out:     # a field (1, 2 or 4 bytes) set to a boundary value
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from([0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF,
                                          0x10000, 0xFFFFFFFF]))
            out[pos:pos + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "little")
        elif kind == "repeat" and out:   # a record or field sent twice
            width = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 12]))
            out[pos:pos] = out[pos:pos + width]
        elif kind == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut" and out:
            del out[pos:pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "replace" and out:
            out[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del out[pos:]
    return bytes(out)


@st.composite
def field_body(draw, cmd: int, request: bytes, body: bytes) -> bytes:
    """The correct payload ``body`` with one field set near or past its limit (a reply
    broken in one field is the hardest to tell from a good one, and byte mutations rarely
    hit exactly one)."""
    if cmd == Cmd.PING:
        # (offset, width, values): magic, version, rows, cols, then the 16-bit fields, clk_hz
        fields = [(0, 2, [b"TS", b"\0\0", b"S\0"]), (2, 1, [0, 2, 255]),
                  (3, 1, [0, 1, 32, 33, 255]), (4, 1, [0, 1, 32, 33, 255])]
        fields += [(off, 2, [0, 1, 5, 6, 7, 48, 49, 0xFFFF]) for off in range(5, 15, 2)]
        fields += [(15, 4, [0, 1, 2**32 - 1])]
        off, width, values = draw(st.sampled_from(fields))
        value = draw(st.sampled_from(values))
        raw = value if isinstance(value, bytes) else value.to_bytes(width, "little")
        return body[:off] + raw + body[off + width:]
    if cmd == Cmd.STATUS:
        return body + bytes(4) if draw(st.booleans()) else body[:-draw(st.integers(1, 8))]
    if cmd == Cmd.READ:
        want = int.from_bytes(request[:2], "little")
        wavelets = [body[i:i + 6] for i in range(0, len(body), 6)]
        if not wavelets or want > 16:
            wavelets.append(bytes(6))
        if want > 16 or draw(st.booleans()):            # one wavelet from a row off the mesh
            i = draw(st.integers(0, len(wavelets) - 1))
            wavelets[i] = wavelets[i][:5] + bytes([draw(st.sampled_from([ROWS, ROWS + 1, 255]))])
        else:                                           # more wavelets than asked for
            extra = max(want + 1 - len(wavelets), 1)
            wavelets += [bytes(6)] * draw(st.integers(extra, extra + 2))
        return b"".join(wavelets)
    k = (len(request) - 1) // WAVELET_IN_BYTES
    if draw(st.booleans()):
        accepted = draw(st.sampled_from([0, max(k - 1, 0), k, k + 1, 0xFFFF]))
        return accepted.to_bytes(2, "little") + body[2:]
    return body[:2] + bytes([draw(st.sampled_from([0, 1, 2, 255]))])


@st.composite
def reply_to(draw, cmd: int, payload: bytes) -> tuple[bytes, bool]:
    """(reply bytes, whether it is the correct reply)."""
    body = correct_body(cmd, payload, draw(_east))
    good = encode_frame(cmd | Cmd.REPLY, body)
    kind = draw(st.sampled_from(["correct", "correct", "payload", "payload", "fields",
                                 "fields", "frame", "other", "random", "nothing",
                                 "garbage+correct"]))
    _event(f"reply: {kind}")
    _event(f"{Cmd(cmd).name} reply: {kind}")
    if kind == "correct":
        return good, True
    if kind == "payload":       # a valid frame around a damaged payload: the field checks
        bad = draw(mutated_bytes(body))
        return encode_frame(cmd | Cmd.REPLY, bad), bad == body
    if kind == "fields":
        bad = draw(field_body(cmd, payload, body))
        return encode_frame(cmd | Cmd.REPLY, bad), bad == body
    if kind == "frame":         # damage anywhere, the CRC left as it was
        bad = draw(mutated_bytes(good))
        return bad, bad == good
    if kind == "other":
        other = draw(st.sampled_from([c for c in Cmd if c != Cmd.ERROR] + [0x7F, 0x55]))
        return encode_frame(other | (Cmd.REPLY if other != 0x7F else 0),
                            draw(st.binary(max_size=48))), False
    if kind == "random":
        return draw(st.binary(max_size=64)), False
    if kind == "nothing":
        return b"", False
    # Bytes before the sync are skipped by the host: still the correct reply, unless the
    # garbage itself holds a sync pattern.
    junk = draw(st.binary(max_size=8))
    return junk + good, SYNC not in junk + good[:1]


def protocol_allows(cmd: int, request: bytes, raw: bytes, rows: int = ROWS) -> bool:
    """The spec, written apart from the host: may a correct host accept ``raw`` as the reply
    to ``cmd`` (with request payload ``request``)? Bytes before the first sync are skipped;
    the frame must be complete, its CRC right, its command the reply to ``cmd``, and its
    payload what the protocol allows for that command. ``rows``: the mesh rows the board
    announced in its last PING reply (a READ wavelet must come from one of them)."""
    at = raw.find(SYNC)
    if at < 0 or len(raw) < at + 7:
        return False
    length = int.from_bytes(raw[at + 2:at + 4], "little")
    frame = raw[at:at + 7 + length]
    if len(frame) < 7 + length:
        return False
    body = frame[5:-2]
    if crc16(frame[2:-2]) != int.from_bytes(frame[-2:], "big"):
        return False
    if frame[4] != cmd | Cmd.REPLY:
        return False                                   # ERROR frames included
    if cmd == Cmd.PING:
        if len(body) != 19 or body[:2] != PING_MAGIC or body[2] != PROTOCOL_VERSION:
            return False
        u16 = [int.from_bytes(body[i:i + 2], "little") for i in range(5, 15, 2)]
        sram_kb, acc_depth, max_payload, east_depth, divisor = u16
        if max_payload < 1 + WAVELET_IN_BYTES or not east_depth or not divisor:
            return False
        try:
            MeshShape(body[3], body[4], sram_kb=sram_kb, acc_depth=acc_depth)
        except ValueError:
            return False
        return True
    if cmd == Cmd.STATUS:
        return len(body) == 4 * len(STATUS_FIELDS)
    if cmd == Cmd.READ:
        want = int.from_bytes(request[:2], "little")
        return (len(body) % WAVELET_OUT_BYTES == 0 and len(body) // WAVELET_OUT_BYTES <= want
                and all(body[i + 5] < rows for i in range(0, len(body), WAVELET_OUT_BYTES)))
    if cmd == Cmd.WRITE:
        k = (len(request) - 1) // WAVELET_IN_BYTES
        return len(body) == 3 and int.from_bytes(body[:2], "little") <= k and body[2] <= 1
    return False


class VirtualClock:
    """The host's clock in these tests: time passes only while the host waits on a read that
    gets nothing, so timeouts happen exactly when the board is silent, never because the
    machine running the test was slow (a 2 ms timeout on a real clock is a flaky test)."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class FuzzedBoard(Transport):
    """Answers each request with a reply drawn from ``data``."""

    name = "fuzz0"

    def __init__(self, data, clock: VirtualClock):
        self.data = data
        self.clock = clock
        self.pending = b""
        self.drawn = 0
        self.all_correct = True
        # The rows the board announced last (a drawn PING reply may announce another valid
        # shape; the host must then hold the board to it), and every row announced.
        self.rows = ROWS
        self.announced = {ROWS}

    def write(self, data: bytes) -> None:
        assert data[:2] == SYNC, f"the host sent a frame without sync: {data.hex()}"
        cmd, payload = data[4], data[5:-2]
        if self.drawn < DRAWN_REPLIES:
            self.drawn += 1
            reply, same = self.data.draw(reply_to(cmd, payload))
            ok = protocol_allows(cmd, payload, reply, self.rows)
            # The true board's reply is allowed while the board's announced shape is its own.
            assert ok or not same or self.rows != ROWS, (
                f"the oracle refuses a correct reply {reply.hex()}")
            self.all_correct &= ok
        else:
            reply, ok = correct_reply(cmd, payload), True
        if ok and cmd == Cmd.PING:
            at = reply.find(SYNC)
            self.rows = reply[at + 5 + 3]          # payload byte 3: rows
            self.announced.add(self.rows)
        self.pending = reply        # a new request: a stale reply is gone (as after resync)

    def read(self, n: int, timeout: float) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        if not out:
            self.clock.now += max(timeout, 1e-3)      # silence: the host waited it out
        return out


_ops = st.lists(st.one_of(
    st.just(("ping",)), st.just(("status",)),
    st.tuples(st.just("read"), st.integers(0, 8)),
    st.tuples(st.just("write"), st.sampled_from("WN"), st.integers(0, 1),
              st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=30)),
), min_size=1, max_size=6)


def _check(data, ops, warm: bool | None = None, limit: float = TIME_LIMIT_S):
    clock = VirtualClock()
    fake = FuzzedBoard(data, clock)
    board = Board(fake, timeout=0.5)
    with mock.patch("sparktile.cosim.board.host.time", clock):
        _run_ops(data, fake, board, ops, warm, limit)


def _run_ops(data, fake, board, ops, warm, limit):
    if warm or (warm is None and data.draw(st.booleans())):
        # Most sessions start with a good PING; the drawn replies then reach the other kinds.
        fake.drawn = DRAWN_REPLIES
        board.ping()
        fake.drawn = 0
    try:
        with time_limit(limit):
            for op in ops:
                if op[0] == "ping":
                    info = board.ping()
                    assert info == board.info and 1 <= info["rows"] and 1 <= info["cols"]
                elif op[0] == "status":
                    st_ = board.status()
                    assert set(st_) == set(STATUS_FIELDS)
                elif op[0] == "read":
                    n = board.read_east(op[1])
                    assert 0 <= n <= op[1]
                else:
                    _, side, index, pays = op
                    board.write(side, index, pays, [0] * len(pays))
        outcome = "answer"
        assert fake.all_correct, "the host accepted a reply the protocol does not allow"
    except BoardError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz0"), f"a board error that does not name the port: {msg}"
        assert "\n" not in msg, msg
        # A board that keeps answering "accepted nothing" / "stalled" within the protocol is
        # still refused, after a bounded number of tries.
        assert not fake.all_correct or "accepted nothing" in msg or "stopped taking" in msg, \
            f"replies the protocol allows were refused: {msg}"
        outcome = type(exc).__name__
    _event(f"outcome: {outcome}")
    # Wavelets the host queued came from rows that exist.
    assert all(r < max(fake.announced) for r, q in board._east.items() if q)


#: One command at a time after a good PING, so that each reply parser gets its share.
_ONE = {
    "ping": st.just([("ping",)]),
    "status": st.just([("status",)]),
    "read": st.tuples(st.just("read"), st.integers(0, 8)).map(lambda op: [op]),
    "write": st.tuples(st.just("write"), st.sampled_from("WN"), st.integers(0, 1),
                       st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=30)
                       ).map(lambda op: [op]),
}


@DEFAULT
@given(st.data(), _ops)
def test_fuzz_board_replies(data, ops):
    _check(data, ops)


@pytest.mark.parametrize("command", sorted(_ONE))
@DEFAULT
@given(data=st.data())
def test_fuzz_board_reply_of_one_command(command, data):
    _check(data, data.draw(_ONE[command]), warm=True)


@pytest.mark.fuzz
def test_fuzz_long_board_replies():
    run_long(lambda data, ops: _check(data, ops, limit=LONG_TIME_LIMIT_S), st.data(), _ops,
             settings_=LONG, total=LONG_EXAMPLES)


@pytest.mark.fuzz
@pytest.mark.parametrize("command", sorted(_ONE))
def test_fuzz_long_board_reply_of_one_command(command):
    run_long(lambda data: _check(data, data.draw(_ONE[command]), warm=True,
                                 limit=LONG_TIME_LIMIT_S),
             st.data(), settings_=LONG, total=LONG_EXAMPLES)
