"""Every bit layout that crosses the hardware/software boundary, defined once.

The RTL views signals through these :class:`~amaranth.lib.data.Struct` layouts; the mapping
compiler, the harness, the host bridge and the tests pack and unpack the same layouts as
integers with :func:`pack` and :func:`unpack`, so no shift or mask is written twice.

* :class:`Wavelet` -- what one link carries in one cycle: a 32-bit payload, a *color* (a
  virtual channel that selects a route at every router and a task at the destination PE) and
  a control bit (38 bits, :data:`WAVELET_BITS`).
* :class:`CfgHeader` -- a configuration header's payload (``ctrl = 1`` on :data:`CFG_COLOR`):
  ``[31:27]`` target column, ``[26:24]`` opcode, ``[23:16]`` address, ``[15:0]`` data.
  Configuration wavelets enter a row at its west edge and travel east; *data* wavelets
  (``ctrl = 0``) after a :attr:`CfgOp.SRAM_BURST` header are written to consecutive SRAM
  words of the addressed tile.
* :class:`RouteEntry` -- the data field of a :attr:`CfgOp.ROUTE` header.
* :class:`CfgResponse` -- the answer to :attr:`CfgOp.READ`, leaving the row's east edge on
  :data:`RSP_COLOR`: ``[31:27]`` column, ``[23:16]`` address, ``[15:0]`` value.
* :class:`DescWord0`, :class:`DescWord1` (with :class:`DescFlags`), :class:`DescWord2` -- a
  PE task descriptor, three SRAM words (see :mod:`sparktile.hdl.pe`).
* :class:`RequantWord` -- one output row's requantization multiplier and shift, in SRAM.

The host bridge's byte frames (``hdl/fpga/bridge.py``) are byte strings, not bit fields; their
wavelet records use :func:`pack` of :class:`Wavelet` like everything else.
"""


import enum

from amaranth.hdl import Shape, unsigned
from amaranth.lib import data

__all__ = [
    "PAYLOAD_BITS", "COLOR_BITS", "NUM_COLORS", "CFG_COLOR", "RSP_COLOR", "ROUTABLE_COLORS",
    "Port", "NUM_PORTS", "Wavelet", "RouteEntry", "CfgOp", "PeReg", "Counter",
    "cfg_header", "route_entry", "decode_response", "MAX_MESH_DIM",
    "WAVELET_BITS", "CfgHeader", "CfgResponse", "DescFlags", "DescWord0", "DescWord1",
    "DescWord2", "DESC_WORDS", "RequantWord", "pack", "unpack", "pack_array", "width_of",
    "FLAG_FIRST", "FLAG_LAST", "FLAG_INT32", "cat_bits", "split_bits", "CC_BITS", "cc",
    "CC_CTRL", "CC_COLOR", "ReadAddress", "HALF_BITS",
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


class CfgHeader(data.Struct):
    """Payload of a configuration header (``ctrl = 1`` on :data:`CFG_COLOR`)."""

    value: unsigned(16)     #: data: a register value, a route entry, a burst's first word
    addr: unsigned(8)       #: color, register, or counter half, by opcode
    op: unsigned(3)         #: :class:`CfgOp`
    col: unsigned(5)        #: target column in the row the header entered


class CfgResponse(data.Struct):
    """Payload of a :attr:`CfgOp.READ` response (on :data:`RSP_COLOR`)."""

    value: unsigned(16)     #: one half of the counter
    addr: unsigned(8)       #: the READ header's address (2 * counter + half)
    zero: unsigned(3)       #: always 0
    col: unsigned(5)        #: the answering tile's column


class DescFlags(data.Struct):
    """How a PE pass treats its partial sums."""

    first: unsigned(1)      #: start from 0 (no partial sum arrives from the west)
    last: unsigned(1)       #: the row's last PE: emit results, not partial sums
    int32: unsigned(1)      #: with ``last``: emit int32 results, not requantized int8


class DescWord0(data.Struct):
    """Descriptor word 0: where the pass's weights are."""

    w_base: unsigned(16)    #: SRAM word of row 0
    n_words: unsigned(16)   #: words per row (input lanes / 4)


class DescWord1(data.Struct):
    """Descriptor word 1: how many rows, and the flags."""

    rows: unsigned(16)      #: output rows of this pass (1 .. acc_depth)
    flags: DescFlags
    unused: unsigned(13)


class DescWord2(data.Struct):
    """Descriptor word 2: where the requantization words are."""

    q_base: unsigned(16)    #: SRAM word of row 0's :class:`RequantWord`
    unused: unsigned(16)


#: SRAM words of one descriptor.
DESC_WORDS = 3


class RequantWord(data.Struct):
    """One output row's requantization: ``y = clamp(round(acc * mult / 2**shift))``."""

    mult: unsigned(16)
    shift: unsigned(6)
    unused: unsigned(10)


class ReadAddress(data.Struct):
    """The address field of a :attr:`CfgOp.READ` header: a counter and one 16-bit half."""

    half: unsigned(1)       #: 0: bits 15:0, 1: bits 31:16
    counter: unsigned(7)    #: :class:`Counter`


class CfgOp(enum.IntEnum):
    """Opcodes of configuration headers (``[26:24]``)."""

    ROUTE = 0       #: addr = color, data = RouteEntry (src in [2:0], dst mask in [7:3])
    #: addr = PE register, data = value. A ``pe="gemv"`` tile: :class:`PeReg`, values below
    #: 32. A ``pe="core"`` tile: the task table, addr = color 0..31, data = program address
    #: [14:0] (in the SRAM) and valid [15]; the input-queue bindings, addr = 0x20 + queue,
    #: data = color [4:0] and valid [5] (``sparktile.hdl.isa.task_reg``/``task_entry``,
    #: ``queue_reg``/``queue_entry``). Anything else is counted in ``CFG_ERRORS``.
    PE_REG = 1
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


def width_of(layout) -> int:
    """Bits of ``layout`` (:data:`WAVELET_BITS` for :class:`Wavelet`)."""
    return Shape.cast(layout).width


def _fields(layout):
    """``(name, offset, width, sub-struct or None)`` of a struct layout, cached per layout."""
    if layout not in _FIELDS:
        _FIELDS[layout] = [(name, f.offset, f.width, f.shape if _is_struct(f.shape) else None)
                           for name, f in data.Layout.cast(layout)]
    return _FIELDS[layout]


_FIELDS: dict = {}


def _is_struct(shape) -> bool:
    return isinstance(shape, data.StructLayout) or (
        isinstance(shape, type) and issubclass(shape, data.Struct))


def pack(layout, **fields) -> int:
    """The integer whose bits are ``fields`` laid out as ``layout`` (missing fields are 0).

    A sub-struct field takes an int or a dict; a value outside its field raises
    ``ValueError`` naming the field and the range.
    """
    known = {name: (off, width, sub) for name, off, width, sub in _fields(layout)}
    word = 0
    for name, v in fields.items():
        if name not in known:
            raise ValueError(f"{_name(layout)} has no field {name!r}; fields: "
                             f"{', '.join(known)}")
        off, width, sub = known[name]
        if isinstance(v, dict):
            if sub is None:
                raise ValueError(f"{_name(layout)}.{name} is not a struct")
            v = pack(sub, **v)
        v = int(v)
        if not 0 <= v < 1 << width:
            raise ValueError(f"{_name(layout)}.{name} must be in [0, {(1 << width) - 1}], "
                             f"not {v}")
        word |= v << off
    return word


def unpack(layout, word: int) -> dict:
    """``{field: int}`` of ``word`` laid out as ``layout`` (sub-structs as dicts)."""
    word = int(word)
    out = {}
    for name, off, width, sub in _fields(layout):
        v = (word >> off) & ((1 << width) - 1)
        out[name] = unpack(sub, v) if sub is not None else v
    return out


def pack_array(layout, **fields):
    """:func:`pack` over numpy arrays (broadcast), as ``uint64`` (``uint32`` if it fits):
    the compiler packs a whole SRAM image this way. Values are range-checked."""
    import numpy as np
    known = {name: (off, width) for name, off, width, _ in _fields(layout)}
    arrays = {k: np.asarray(v) for k, v in fields.items()}
    shape = np.broadcast_shapes(*(a.shape for a in arrays.values())) if arrays else ()
    word = np.zeros(shape, np.uint64)
    for name, a in arrays.items():
        if name not in known:
            raise ValueError(f"{_name(layout)} has no field {name!r}; fields: "
                             f"{', '.join(known)}")
        off, width = known[name]
        if a.size and (a.min() < 0 or a.max() >= 1 << width):
            bad = a[(a < 0) | (a >= 1 << width)].flat[0]
            raise ValueError(f"{_name(layout)}.{name} must be in [0, {(1 << width) - 1}], "
                             f"not {bad}")
        word |= a.astype(np.uint64) << np.uint64(off)
    return word.astype(np.uint32) if width_of(layout) <= 32 else word


def cat_bits(*fields: tuple[int, int]) -> int:
    """``Cat`` on integers: ``(value, width)`` pairs, the first in the lowest bits (how a
    testbench drives several ports, sampled as one ``Cat``, in one call)."""
    word, off = 0, 0
    for value, width in fields:
        if not 0 <= int(value) < 1 << width:
            raise ValueError(f"{value} does not fit in {width} bits")
        word |= int(value) << off
        off += width
    return word


def split_bits(word: int, *widths: int) -> list[int]:
    """The inverse of :func:`cat_bits`: ``word`` cut into fields of ``widths``, lowest first."""
    out = []
    for width in widths:
        out.append(word & ((1 << width) - 1))
        word >>= width
    return out


def _name(layout) -> str:
    return getattr(layout, "__name__", repr(layout))


#: Bits of a :class:`Wavelet` as one integer (payload, then color, then ctrl).
WAVELET_BITS = width_of(Wavelet)
#: Bits of the *cc* field that the harness's DPI calls and the host bridge carry beside a
#: 32-bit payload: a wavelet's color and control bit, i.e. ``wavelet >> PAYLOAD_BITS``.
CC_BITS = WAVELET_BITS - PAYLOAD_BITS


def cc(color: int, ctrl: int = 0) -> int:
    """The cc field of a wavelet of ``color`` (and ``ctrl``)."""
    return pack(Wavelet, color=color, ctrl=int(bool(ctrl))) >> PAYLOAD_BITS


#: The control bit within a cc field.
CC_CTRL = cc(0, 1)
#: The color bits within a cc field: ``cc_field & CC_COLOR`` is the color (ints or arrays).
CC_COLOR = cc(NUM_COLORS - 1)

#: Bits of a counter that one READ response carries (the :class:`CfgResponse` value).
HALF_BITS = data.Layout.cast(CfgResponse)["value"].width

#: :class:`DescFlags` as integers (the ``flags`` of :class:`DescWord1`).
FLAG_FIRST = pack(DescFlags, first=1)
FLAG_LAST = pack(DescFlags, last=1)
FLAG_INT32 = pack(DescFlags, int32=1)


def cfg_header(col: int, op: "CfgOp", addr: int = 0, value: int = 0) -> int:
    """Payload of a configuration header addressed to column ``col`` of the row it enters
    (``ValueError`` naming the field for a value that does not fit: the column field holds
    0 .. MAX_MESH_DIM - 1)."""
    return pack(CfgHeader, col=col, op=int(op), addr=addr, value=value)


def route_entry(src, dst) -> int:
    """Data field of a :attr:`CfgOp.ROUTE` header: accept from ``src``, send to ports ``dst``."""
    mask = 0
    for p in dst:
        mask |= 1 << int(p)
    if not 0 <= int(src) < NUM_PORTS:
        raise ValueError(f"route source must be a port 0..{NUM_PORTS - 1}, not {src}")
    return pack(RouteEntry, src=int(src), dst=mask)


def decode_response(payload: int) -> tuple[int, int, int]:
    """Split a :data:`RSP_COLOR` payload into ``(column, address, 16-bit value)``."""
    r = unpack(CfgResponse, payload)
    return r["col"], r["addr"], r["value"]
