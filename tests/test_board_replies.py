"""issue 17: the FPGA host treats every reply as untrusted (fake transport, short timeouts)."""

import pytest
from sparktile.cosim.board import Board, BoardError, BoardTimeout, LinkError, Transport
from sparktile.hdl.fpga.protocol import Cmd, encode_frame


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


def _ping(max_payload=256):
    p = b"ST" + bytes(7) + max_payload.to_bytes(2, "little") + bytes(8)
    return encode_frame(Cmd.PING | Cmd.REPLY, p)


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


@pytest.mark.parametrize("payload", [b"ST", b"ST" + bytes(10)])
def test_short_ping_reply(payload):
    with pytest.raises(LinkError, match=f"PING reply of {len(payload)} bytes"):
        _board(encode_frame(Cmd.PING | Cmd.REPLY, payload)).ping()


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
