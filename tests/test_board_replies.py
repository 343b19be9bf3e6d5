"""issue 17: the FPGA host treats every reply as untrusted (fake transport, short timeouts)."""

import pytest
from sparktile.cosim.board.host import Board, BoardError, BoardTimeout, LinkError, Transport
from sparktile.hdl.fpga.bridge import ping_reply
from sparktile.hdl.fpga.protocol import STATUS_FIELDS, Cmd, encode_frame


class Script(Transport):
    """Answers each write with the next scripted bytes; nothing once the script is used up."""

    name = "fake0"

    def __init__(self, replies):
        self.replies = list(replies)
        self.pending = b""

    def write(self, data):
        if self.replies:
            self.pending += self.replies.pop(0)

    def read(self, n, timeout):
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def _ping_payload(**fields):
    args = dict(rows=2, cols=2, sram_kb=4, acc_depth=32, max_payload=256, east_depth=64,
                divisor=4, clk_hz=50_000_000)
    args.update(fields)
    return ping_reply(**args)


def _ping(max_payload=256, **fields):
    return encode_frame(Cmd.PING | Cmd.REPLY, _ping_payload(max_payload=max_payload, **fields))


def _board(*replies):
    return Board(Script(replies), timeout=0.05)


def test_write_that_accepts_nothing_is_bounded():
    b = _board(_ping(), *[encode_frame(Cmd.WRITE | Cmd.REPLY, b"\0\0\0")] * 100)
    with pytest.raises(BoardError, match="fake0: WRITE W0: the board accepted nothing"):
        b.write("W", 0, [1, 2], [0, 0])


def test_write_accepted_more_than_sent_is_a_link_error():
    b = _board(_ping(), encode_frame(Cmd.WRITE | Cmd.REPLY, b"\x09\0\0"))
    with pytest.raises(LinkError, match="accepted 9 wavelets of 2"):
        b.write("W", 0, [1, 2], [0, 0])


def test_empty_write_reply():
    b = _board(_ping(), encode_frame(Cmd.WRITE | Cmd.REPLY, b""))
    with pytest.raises(LinkError, match="reply of 0 bytes"):
        b.write("W", 0, [1], [0])


def test_empty_error_payload():
    with pytest.raises(LinkError, match="empty ERROR payload"):
        _board(encode_frame(Cmd.ERROR, b"")).ping()


@pytest.mark.parametrize("payload", [b"ST", b"ST" + bytes(10), _ping_payload() + b"\0"])
def test_ping_reply_of_the_wrong_length(payload):
    with pytest.raises(LinkError, match=f"PING: reply of {len(payload)} bytes, expected 19"):
        _board(encode_frame(Cmd.PING | Cmd.REPLY, payload)).ping()


@pytest.mark.parametrize("fields, match", [
    ({"rows": 0}, "not a mesh this host can drive"),
    ({"cols": 200}, "not a mesh this host can drive"),
    ({"max_payload": 3}, "max_payload 3 is out of range"),
    ({"east_depth": 0}, "east_depth 0 is out of range"),
    ({"divisor": 0}, "divisor 0 is out of range"),
])
def test_ping_fields_out_of_range(fields, match):
    with pytest.raises(LinkError, match=match) as e:
        _board(_ping(**fields)).ping()
    assert "fake0: PING" in str(e.value) and "reply " in str(e.value)


def test_ping_from_something_else_or_another_version():
    p = _ping_payload()
    with pytest.raises(LinkError, match="magic 5854 is not 5354 .ST.: not a sparktile bridge"):
        _board(encode_frame(Cmd.PING | Cmd.REPLY, b"XT" + p[2:])).ping()
    with pytest.raises(LinkError, match="protocol version 7, this host speaks 1"):
        _board(encode_frame(Cmd.PING | Cmd.REPLY, p[:2] + b"\x07" + p[3:])).ping()


def test_crc_failure_and_wrong_command_quote_the_frame():
    frame = bytearray(_ping())
    frame[-1] ^= 0xFF
    with pytest.raises(LinkError, match=f"PING failed its CRC .*frame {bytes(frame).hex()}"):
        _board(bytes(frame)).ping()
    other = encode_frame(Cmd.STATUS | Cmd.REPLY, bytes(40))
    with pytest.raises(LinkError, match=f"PING answered with command 0x84 .0x84; frame "
                                        f"{other[:32].hex()}"):
        _board(other).ping()


def test_error_frame_names_the_code_and_quotes_it():
    with pytest.raises(BoardError, match=r"rejected PING with BAD_CRC \(reply 0101\)"):
        _board(encode_frame(Cmd.ERROR, b"\x01\x01")).ping()


@pytest.mark.parametrize("n", [0, 39, 41, 80])
def test_status_reply_of_the_wrong_length(n):
    with pytest.raises(LinkError, match=f"STATUS: reply of {n} bytes, expected "
                                        f"{4 * len(STATUS_FIELDS)}"):
        _board(encode_frame(Cmd.STATUS | Cmd.REPLY, bytes(n))).status()


def test_read_reply_checks():
    ping = _ping()
    with pytest.raises(LinkError, match="READ: reply of 7 bytes is not a whole number"):
        _board(ping, encode_frame(Cmd.READ | Cmd.REPLY, bytes(7))).read_east()
    with pytest.raises(LinkError, match="3 wavelets in the reply, at most 2 asked for"):
        _board(ping, encode_frame(Cmd.READ | Cmd.REPLY, bytes(18))).read_east(2)
    bad_row = bytes(5) + b"\x02"                       # row 2 of a 2-row mesh
    b = _board(ping, encode_frame(Cmd.READ | Cmd.REPLY, bytes(6) + bad_row))
    with pytest.raises(LinkError, match="wavelet 1 comes from east row 2; the mesh has rows 0..1"):
        b.read_east()
    assert not any(b._east.values()), "a rejected reply must not leave wavelets queued"


def test_write_stalled_flag_and_long_reply():
    for reply, match in [(b"\x01\0\x05", "stalled flag 5"), (b"\x01\0\0\0", "reply of 4 bytes")]:
        b = _board(_ping(), encode_frame(Cmd.WRITE | Cmd.REPLY, reply))
        with pytest.raises(LinkError, match=match):
            b.write("W", 0, [1], [0])


def test_max_payload_zero():
    b = _board(_ping(0))
    with pytest.raises(LinkError, match="max_payload 0"):
        b.write("W", 0, [1], [0])


def test_timeout_says_what_arrived():
    frame = _ping()
    with pytest.raises(BoardTimeout, match=f"{len(frame) - 3} bytes arrived"):
        _board(frame[:-3]).ping()
    with pytest.raises(BoardTimeout, match="no reply"):
        _board().ping()
