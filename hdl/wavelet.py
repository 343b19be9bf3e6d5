"""The wavelet: the 38-bit unit of transfer on the sparktile fabric, and the configuration codes.

A wavelet is what one link carries in one cycle: a 32-bit payload, a *color* (a virtual
channel that selects a route at every router and a task at the destination PE) and a control
bit. This module is the single definition of the layout, of the port numbering, of the reserved
colors, and of the encoding of configuration wavelets; the RTL, the mapping compiler and the
benches all import it.

Configuration wavelets (color :data:`CFG_COLOR`) enter a row at its west edge and travel east.
A *header* (``ctrl = 1``) carries ``[31:27]`` target column, ``[26:24]`` opcode, ``[23:16]``
address and ``[15:0]`` data. *Data* wavelets (``ctrl = 0``) following a
:attr:`CfgOp.SRAM_BURST` header are written to consecutive SRAM words of the addressed tile.
Responses to :attr:`CfgOp.READ` leave the row's east edge on :data:`RSP_COLOR` as
``[31:27]`` column, ``[23:16]`` address, ``[15:0]`` value.
"""


import enum

from amaranth.hdl import unsigned
from amaranth.lib import data

__all__ = [
    "PAYLOAD_BITS", "COLOR_BITS", "NUM_COLORS", "CFG_COLOR", "RSP_COLOR", "ROUTABLE_COLORS",
    "Port", "NUM_PORTS", "Wavelet", "RouteEntry", "CfgOp", "PeReg", "Counter",
    "cfg_header", "route_entry", "decode_response", "MAX_MESH_DIM",
]

PAYLOAD_BITS = 32
COLOR_BITS = 5
#: Colors addressable by the color field.
NUM_COLORS = 1 << COLOR_BITS
#: Hard-wired configuration color: west-to-east along a row, consumed by the addressed tile.
CFG_COLOR = NUM_COLORS - 1
#: Hard-wired response color: west-to-east along a row, out of the east edge.
RSP_COLOR = NUM_COLORS - 2
#: Colors routed by the per-router route table (0 .. ROUTABLE_COLORS - 1).
ROUTABLE_COLORS = NUM_COLORS - 2
#: Largest mesh dimension: the header's column field is 5 bits wide.
MAX_MESH_DIM = 32


class Port(enum.IntEnum):
    """Router port numbers; also the bit positions of a route's output mask."""

    N = 0
    E = 1
    S = 2
    W = 3
    RAMP = 4


NUM_PORTS = len(Port)


class Wavelet(data.Struct):
    """One fabric transfer.

    Members
    -------
    payload : unsigned(32)
        Data: four packed int8 lanes, an int32 partial sum, or a configuration word.
    color : unsigned(5)
        Virtual channel. Colors below :data:`ROUTABLE_COLORS` follow the route table.
    ctrl : unsigned(1)
        Control wavelet: a configuration header, or a descriptor selector for a PE task.
    """

    payload: unsigned(PAYLOAD_BITS)
    color: unsigned(COLOR_BITS)
    ctrl: unsigned(1)


class RouteEntry(data.Struct):
    """One route-table entry: the input a color is accepted from and the outputs it goes to.

    An entry with an empty ``dst`` mask disables the color at this router (its wavelets are
    dropped and counted as misrouted).
    """

    src: unsigned(3)
    dst: unsigned(NUM_PORTS)


class CfgOp(enum.IntEnum):
    """Opcodes of configuration headers (``[26:24]``)."""

    ROUTE = 0       #: addr = color, data = RouteEntry (src in [2:0], dst mask in [7:3])
    PE_REG = 1      #: addr = PE register (:class:`PeReg`), data = value
    SRAM_BURST = 2  #: data = first SRAM word address; data wavelets follow
    READ = 3        #: addr = 2 * counter + half (0: bits 15:0, 1: bits 31:16)


class PeReg(enum.IntEnum):
    """PE configuration registers written by :attr:`CfgOp.PE_REG`."""

    X_COLOR = 0     #: color of the activation stream (binds the MAC task)
    PSUM_COLOR = 1  #: color of incoming partial sums (binds the reduce task's operand queue)
    OUT_COLOR = 2   #: color on which the PE sends partial sums or results


NUM_PE_REGS = len(PeReg)


class Counter(enum.IntEnum):
    """Per-tile counters readable with :attr:`CfgOp.READ` (32 bits each, two reads)."""

    CYCLES = 0          #: cycles since reset
    MAC_BUSY = 1        #: cycles the MAC array did useful work (one row of 4 MACs)
    #: cycles a task waited for an input wavelet: the MAC task in the middle of a vector, or
    #: the reduce task for a partial sum
    STALL_IN = 2
    #: cycles the reduce task held its next result because the PE's output register was still
    #: waiting for the fabric (a last result waiting in the register alone is not counted)
    STALL_OUT = 3
    FORWARDED = 4       #: wavelets the router sent on N/E/S/W (ramp excluded)
    ROUTE_DROPS = 5     #: wavelets dropped by the router: wrong input, or color disabled
    CFG_ERRORS = 6      #: malformed configuration wavelets dropped
    TASK_ERRORS = 7     #: wavelets the PE dropped: unbound color, data with no descriptor
    VECTORS = 8         #: vectors completed by the reduce task


NUM_COUNTERS = len(Counter)


def cfg_header(col: int, op: "CfgOp", addr: int = 0, value: int = 0) -> int:
    """Payload of a configuration header addressed to column ``col`` of the row it enters."""
    if not 0 <= col < MAX_MESH_DIM:
        raise ValueError(f"column must be in [0, {MAX_MESH_DIM - 1}], not {col}")
    if not 0 <= int(op) < 8:
        raise ValueError(f"opcode must be in [0, 7], not {op}")
    if not 0 <= addr < 256:
        raise ValueError(f"address must be in [0, 255], not {addr}")
    if not 0 <= value < 65536:
        raise ValueError(f"data must be in [0, 65535], not {value}")
    return (col << 27) | (int(op) << 24) | (addr << 16) | value


def route_entry(src, dst) -> int:
    """Data field of a :attr:`CfgOp.ROUTE` header: accept from ``src``, send to ports ``dst``."""
    mask = 0
    for p in dst:
        mask |= 1 << int(p)
    if not 0 <= int(src) < NUM_PORTS:
        raise ValueError(f"route source must be a port 0..{NUM_PORTS - 1}, not {src}")
    return int(src) | (mask << 3)


def decode_response(payload: int) -> tuple[int, int, int]:
    """Split a :data:`RSP_COLOR` payload into ``(column, address, 16-bit value)``."""
    return (payload >> 27) & 0x1F, (payload >> 16) & 0xFF, payload & 0xFFFF
