"""The host link's framed protocol: one definition for the gateware and the host driver.

A frame, in both directions::

    SYNC0 SYNC1 | LEN_lo LEN_hi | CMD | PAYLOAD (LEN bytes) | CRC_hi CRC_lo

``LEN`` counts payload bytes only (at most the bridge's ``max_payload``). The CRC is
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection) over ``LEN .. PAYLOAD``, sent
most significant byte first, so that feeding it through the same CRC leaves a zero residue
(that is what the bridge checks).

The host sends one request and waits for its answer; the bridge answers every frame it
recognises: ``CMD | 0x80`` with the command's reply, or :attr:`Cmd.ERROR` with
``[ErrorCode, cmd]``. Resynchronisation: the bridge hunts for ``SYNC0 SYNC1``; a frame whose
bytes stop arriving for ``frame_timeout`` cycles (a dropped byte) is answered with
:attr:`ErrorCode.TIMEOUT`, a frame with a bad CRC with :attr:`ErrorCode.BAD_CRC`; neither
executes anything, so the host may resend it.

Wavelets travel as 5 bytes (host to board: payload little-endian, then ``cc`` = color |
ctrl << 5, :func:`sparktile.hdl.formats.cc`) or 6 bytes (board to host: the same plus
the mesh row the wavelet left from).
"""

from __future__ import annotations

import enum

from amaranth.lib import crc

__all__ = ["SYNC", "Cmd", "ErrorCode", "CRC_PARAMS", "crc16", "encode_frame",
           "WAVELET_IN_BYTES", "WAVELET_OUT_BYTES", "port_code", "PING_MAGIC",
           "PROTOCOL_VERSION", "STATUS_FIELDS"]

#: Start of every frame. Two bytes, so random garbage starts a phantom frame only 1 in 65536
#: times (and then the CRC or the timeout rejects it).
SYNC = bytes([0xA5, 0x5A])
CRC_PARAMS = crc.catalog.CRC16_CCITT_FALSE(data_width=8)
WAVELET_IN_BYTES = 5
WAVELET_OUT_BYTES = 6
PING_MAGIC = b"ST"
PROTOCOL_VERSION = 1


class Cmd(enum.IntEnum):
    """Request commands; a reply carries ``cmd | REPLY``."""

    PING = 0x01     #: -> the board describes itself (see bridge.ping_reply)
    WRITE = 0x02    #: [port code] + wavelets (5 bytes each) -> accepted (2), stalled (1)
    READ = 0x03     #: [max count (2)] -> east-edge wavelets (6 bytes each)
    STATUS = 0x04   #: -> the bridge's counters, :data:`STATUS_FIELDS`, 4 bytes each
    ERROR = 0x7F    #: (reply only) [ErrorCode, offending cmd]

    REPLY = 0x80


class ErrorCode(enum.IntEnum):
    BAD_CRC = 1     #: the frame's CRC did not match; nothing was executed
    BAD_LEN = 2     #: LEN larger than the bridge's buffer
    BAD_CMD = 3     #: unknown command
    BAD_ARG = 4     #: a payload the command cannot take (length, port)
    TIMEOUT = 5     #: the frame stopped arriving half-way (a dropped byte)


#: Counters of the STATUS reply, in order (32 bits each, little-endian).
STATUS_FIELDS = ("frames_ok", "crc_errors", "len_errors", "timeouts", "garbage_bytes",
                 "overruns", "edge_drops", "stall_aborts", "east_level", "cycles")


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (the frame CRC)."""
    return CRC_PARAMS.compute(data)


def encode_frame(cmd: int, payload: bytes = b"") -> bytes:
    """One complete frame."""
    payload = bytes(payload)
    if len(payload) > 0xFFFF:
        raise ValueError(f"frame payload must be at most 65535 bytes, not {len(payload)}")
    body = len(payload).to_bytes(2, "little") + bytes([cmd]) + payload
    return SYNC + body + crc16(body).to_bytes(2, "big")


def port_code(side: str, index: int) -> int:
    """The WRITE command's port byte: bit 7 = north (x streams), clear = west (config)."""
    if side not in ("W", "N"):
        raise ValueError(f"the bridge writes into the west or north edge, not {side!r}")
    if not 0 <= index < 32:
        raise ValueError(f"edge index must be in [0, 31], not {index}")
    return (0x80 if side == "N" else 0) | index
