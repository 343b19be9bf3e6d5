"""The matmul dispatch point: what the mesh is asked to compute, and who computes it.

Every weight matmul of the ``int8`` path is described once, at quantization time, by a
:class:`MatmulOp` (int8 weights, per-output-channel requantization constants) and executed
by a *backend*: ``backend.matmul(op, x_q)``. :class:`NumpyBackend` is the reference, built
from :mod:`sparktile.golden_model.arith` and nothing else; the hardware-in-the-loop driver
implements the same method on the RTL mesh, so the model code runs unchanged on either.

Ops are static: a backend may keep ``w_q``, ``mult`` and ``shift`` resident (in PE SRAM)
after it first sees an op, keyed by ``op.name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from . import arith

__all__ = ["KINDS", "INDEPENDENT_KINDS", "OUTS", "MatmulOp", "MatmulShape", "output_of", "Backend",
           "NumpyBackend"]

#: The matmuls of a decoder layer, plus the output head.
KINDS = ("q", "k", "v", "o", "gate", "up", "down", "head")
#: Kinds a layer issues together, through a backend's optional ``matmul_many`` (independent
#: matmuls of one input: a mesh can run them at once).
INDEPENDENT_KINDS = (("q", "k", "v"), ("gate", "up"))
#: Output formats: requantized int8, or raw int32 accumulators (output head).
OUTS = ("int8", "int32")


def output_of(kind: str) -> str:
    """What a matmul of ``kind`` returns: the output head its raw int32 accumulators (the
    host scales them into logits), every other matmul requantized int8."""
    return "int32" if kind == "head" else "int8"


@dataclass(frozen=True)
class MatmulShape:
    """What a planner needs of a :class:`MatmulOp` before anything is quantized: a fit check
    or a cycle estimate needs only the name, kind, layer, ``(M, N)`` and output type, and
    quantization (calibration over a text) costs seconds (:meth:`Model.matmul_shapes`)."""

    name: str
    kind: str
    layer: int
    shape: tuple[int, int]
    out: str


@dataclass(eq=False)
class MatmulOp:
    """One static weight matmul of the int8 path.

    Attributes
    ----------
    name : str
        Unique name, e.g. ``"layers.3.mlp.up"`` or ``"head"``.
    kind : str
        One of :data:`KINDS`.
    layer : int
        Decoder layer index, -1 for the output head.
    w_q : numpy.ndarray
        int8 weights, M x N (out x in), C-contiguous; symmetric per output channel.
    mult, shift : numpy.ndarray
        int64 arrays of shape (M,): per-channel requantization multiplier (unsigned 16-bit)
        and shift, from :func:`~sparktile.golden_model.arith.requant_params`.
    out : str
        ``"int8"`` (requantized) or ``"int32"`` (raw accumulators).
    """

    name: str
    kind: str
    layer: int
    w_q: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    out: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"MatmulOp {self.name!r}: kind must be one of {', '.join(KINDS)}, "
                             f"not {self.kind!r}")
        if self.out not in OUTS:
            raise ValueError(f"MatmulOp {self.name!r}: out must be 'int8' or 'int32', "
                             f"not {self.out!r}")
        w = self.w_q
        if not isinstance(w, np.ndarray) or w.dtype != np.int8 or w.ndim != 2:
            raise ValueError(f"MatmulOp {self.name!r}: w_q must be a 2-D int8 array, not "
                             f"{getattr(w, 'dtype', type(w))} of shape {np.shape(w)}")
        if not w.flags.c_contiguous:
            raise ValueError(f"MatmulOp {self.name!r}: w_q must be C-contiguous")
        m = w.shape[0]
        for k in ("mult", "shift"):
            a = getattr(self, k)
            if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.shape != (m,):
                raise ValueError(f"MatmulOp {self.name!r}: {k} must be an int64 array of "
                                 f"shape ({m},), not {getattr(a, 'dtype', type(a))} of "
                                 f"shape {np.shape(a)}")
        if m and (self.mult.min() < 0 or self.mult.max() >= 1 << arith.MULT_BITS):
            raise ValueError(f"MatmulOp {self.name!r}: mult must be in [0, "
                             f"{(1 << arith.MULT_BITS) - 1}], not [{self.mult.min()}, "
                             f"{self.mult.max()}]")
        if m and (self.shift.min() < 0 or self.shift.max() > arith.SHIFT_MAX):
            raise ValueError(f"MatmulOp {self.name!r}: shift must be in [0, {arith.SHIFT_MAX}]"
                             f", not [{self.shift.min()}, {self.shift.max()}]")

    @property
    def shape(self) -> tuple[int, int]:
        """``(M, N)``: output channels, input channels."""
        return self.w_q.shape

    def __repr__(self):
        m, n = self.shape
        return f"MatmulOp({self.name!r}, kind={self.kind!r}, {m}x{n}, out={self.out!r})"


@runtime_checkable
class Backend(Protocol):
    """Anything that executes :class:`MatmulOp` s."""

    def matmul(self, op: MatmulOp, x_q: np.ndarray) -> np.ndarray:
        """int8 ``x_q`` of shape (B, N) -> int8 or int32 (B, M), per ``op.out``."""
        ...


def check_input(op: MatmulOp, x_q) -> np.ndarray:
    """Validate a backend's activation input: int8 of shape (B, N) for ``op``.

    Raises
    ------
    ValueError
        Quoting the dtype or shape received.
    """
    if not isinstance(x_q, np.ndarray) or x_q.dtype != np.int8 or x_q.ndim != 2:
        raise ValueError(f"{op.name}: activations must be a 2-D int8 array (B, N), not "
                         f"{getattr(x_q, 'dtype', type(x_q))} of shape {np.shape(x_q)}")
    if x_q.shape[1] != op.shape[1]:
        raise ValueError(f"{op.name}: activations have {x_q.shape[1]} columns but the weights "
                         f"are {op.shape[0]}x{op.shape[1]}; they must agree")
    return x_q


class NumpyBackend:
    """The reference backend: :func:`arith.matmul_int8` then :func:`arith.requantize`.

    Bit-exact by definition: it is the arithmetic the PE is checked against.
    """

    name = "numpy"

    def matmul(self, op: MatmulOp, x_q: np.ndarray) -> np.ndarray:
        """Compute ``op`` on int8 activations ``x_q`` (B, N).

        Returns
        -------
        numpy.ndarray
            int8 (B, M) ``requantize(W x^T, mult, shift)^T`` when ``op.out == "int8"``,
            else int32 (B, M) accumulators ``(W x^T)^T``.
        """
        check_input(op, x_q)
        acc = arith.matmul_int8(op.w_q, x_q.T)
        if op.out == "int32":
            return np.ascontiguousarray(acc.T)
        y = arith.requantize(acc, op.mult[:, None], op.shift[:, None])
        return np.ascontiguousarray(y.T)

    def __repr__(self):
        return "NumpyBackend()"
