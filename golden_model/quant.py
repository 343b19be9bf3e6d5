"""Quantization of the golden model's matmuls to the mesh's int8 arithmetic.

Choices (see ``docs/golden_model.md``, *Numerics of the golden model*):

* **Weights**: symmetric int8 per output channel, ``s_w[m] = max|W[m, :]| / 127``,
  ``W_q = clip(rint(W / s_w), -127, 127)`` (round half to even).
* **Activations**: static, symmetric, per tensor, zero-point 0. ``s_x = a / 127`` where ``a``
  is the calibrated absolute maximum of the matmul's input over a fixed built-in
  calibration text (:data:`CALIBRATION_TEXT`), after smoothing (:mod:`.smoothing`); the host
  quantizes ``x_q = clip(rint(x / s_x), -127, 127)``.
* **Outputs**: the mesh requantizes the int32 accumulator to int8 with a static output scale
  per output channel, ``s_out[m] = a_m / 127`` (``a_m``: calibrated absolute maximum of the
  channel's float output, bias excluded): ``y_q = requantize(acc, mult, shift)`` with
  ``(mult, shift) = requant_params(s_w * s_x / s_out)``. Per channel costs the hardware
  nothing (``mult`` and ``shift`` are per channel anyway) and keeps a few outlier channels of
  the residual stream from zeroing all the others. The host dequantizes ``y = y_q * s_out`` in
  float32 and adds the bias (Qwen2) there.
* **Output head**: ``out="int32"``: the host computes ``logits = acc * s_w * s_x``.

* **Per-token dynamic scales** (``act_scales="dynamic"``, for models with activation
  outliers such as SmolLM2-135M): the host quantizes each token (row) with its own scale
  ``s_t = max|x_t| / 127`` (:func:`quantize_act_dynamic`), every matmul returns its int32
  accumulators (``out="int32"``: the output scale would depend on the token, and the
  mesh's requantization constants are static), and the host computes
  ``y = acc * s_w * s_t`` (+ bias).
* **Per-group dynamic scales** (``act_scales="group"``, the default for models with
  outliers): as ``dynamic``, but each token's input is cut into groups of :data:`GROUP` (64)
  consecutive channels with a scale each, and the weights get one scale per output channel
  *and group*. Each group is its own :class:`MatmulOp` (``name.g{j}``: the columns of group
  ``j``, ``out="int32"``), so the mesh computes per-group partial sums and the host adds
  ``sum_j acc_j * s_w[:, j] * s_t[j]``.

Because all static scales are fixed at calibration, ``mult`` and ``shift`` are constants of each
matrix and the :class:`~sparktile.golden_model.backend.MatmulOp` s never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import arith
from .backend import MatmulOp

__all__ = ["CALIBRATION_TEXT", "ACT_SCALES", "QuantLinear", "quantize_weight", "quantize_act",
           "quantize_act_dynamic", "make_linear", "act_scale", "GROUP"]

#: Activation-scale schemes: ``static`` (one calibrated scale per tensor, the mesh
#: requantizes), ``dynamic`` (one scale per token, computed from the token's own maximum;
#: every matmul returns int32 accumulators), ``auto`` (chosen by calibration, see
#: :meth:`~sparktile.golden_model.model.Model.quantize`).
ACT_SCALES = ("auto", "static", "dynamic", "group")
#: Input channels per scale group of the ``group`` scheme.
GROUP = 64

#: Fixed calibration text (``data/calibration.txt``, ~10 KB): Python written for this project
#: plus the opening of two *training-split* standard-library files (so it overlaps no held-out
#: file). Its activation statistics set every static scale; changing it changes every op.
CALIBRATION_TEXT = (Path(__file__).resolve().parent / "data" / "calibration.txt").read_text(
    encoding="utf-8")


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 quantization of a float matrix (M x N).

    Returns
    -------
    w_q : numpy.ndarray
        int8, C-contiguous, values in [-127, 127].
    s_w : numpy.ndarray
        float64 (M,) scales, ``W ~= w_q * s_w[:, None]``; 1.0 for all-zero rows.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"quantize_weight needs a 2-D matrix, not shape {w.shape}")
    amax = np.abs(w).max(axis=1)
    s = np.where(amax > 0, amax / 127.0, 1.0)
    w_q = np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(w_q), s


def act_scale(amax):
    """Symmetric scale(s) ``amax / 127`` for calibrated absolute maxima (1.0 where 0)."""
    a = np.asarray(amax, dtype=np.float64)
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"calibrated ranges must be finite and non-negative, not "
                         f"[{a.min()}, {a.max()}]")
    s = np.where(a > 0, a / 127.0, 1.0)
    return float(s) if s.ndim == 0 else s


def quantize_act(x: np.ndarray, s_x: float) -> np.ndarray:
    """Host-side activation quantization: ``clip(rint(x / s_x), -127, 127)`` as int8."""
    return np.clip(np.rint(np.asarray(x, np.float32) / np.float32(s_x)),
                   -127, 127).astype(np.int8)


def quantize_act_dynamic(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-token (row) dynamic quantization: ``s_t = max|x_t| / 127`` (1 for an all-zero
    row), ``x_q = clip(rint(x / s_t), -127, 127)``. Returns int8 ``x_q`` and float32
    ``s_t`` of shape (T, 1). (Per group: pass ``x`` reshaped to (T, groups, size).)"""
    x = np.asarray(x, np.float32)
    a = np.abs(x).max(axis=-1, keepdims=True)
    s = np.where(a > 0, a / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(x / s), -127, 127).astype(np.int8), s


@dataclass(eq=False)
class QuantLinear:
    """A :class:`MatmulOp` with the host-side constants around it.

    Attributes
    ----------
    op : MatmulOp
        What the backend executes.
    s_w : numpy.ndarray
        float32 (M,) weight scales.
    s_x : float
        Input activation scale.
    s_out : numpy.ndarray or None
        float32 (M,) output scales of an ``out="int8"`` op (None for ``int32``).
    bias : numpy.ndarray or None
        float32 (M,), added on the host after dequantization.
    dynamic : bool
        Per-token dynamic input scales (:func:`quantize_act_dynamic`); ``op.out`` is then
        ``"int32"`` and ``s_x`` is unused.
    ops : list of MatmulOp
        The ops the backend runs: ``[op]``, or one per input-channel group (``group``
        scheme: ``op`` is the first).
    s_wg : numpy.ndarray or None
        float32 (groups, M) weight scales of the group ops.
    """

    op: MatmulOp
    s_w: np.ndarray
    s_x: float
    s_out: np.ndarray | None
    bias: np.ndarray | None
    dynamic: bool = False
    ops: list = None
    s_wg: np.ndarray | None = None

    def __post_init__(self):
        if self.ops is None:
            self.ops = [self.op]

    def quantize_input(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | float]:
        """Host-side input quantization: int8 ``x_q`` and its scale (static, per token
        (T, 1), or per token and group (T, groups, 1) with ``x_q`` (T, groups, size))."""
        if len(self.ops) > 1:
            return quantize_act_dynamic(x.reshape(x.shape[0], len(self.ops), -1))
        if self.dynamic:
            return quantize_act_dynamic(x)
        return quantize_act(x, self.s_x), self.s_x

    def run(self, backend, x: np.ndarray) -> np.ndarray:
        """Quantize ``x`` (T, N) float, run the op(s) on ``backend``, dequantize: float32."""
        x_q, s_x = self.quantize_input(x)
        if len(self.ops) == 1:
            return self.dequantize(backend.matmul(self.op, x_q), s_x)
        out = np.zeros((x.shape[0], self.op.shape[0]), np.float32)
        for j, op in enumerate(self.ops):
            acc = backend.matmul(op, np.ascontiguousarray(x_q[:, j]))
            out += acc.astype(np.float32) * self.s_wg[j][None, :] * s_x[:, j]
        if self.bias is not None:
            out += self.bias
        return out

    def dequantize(self, y: np.ndarray, s_x=None) -> np.ndarray:
        """Backend output (B, M) -> float32, bias added. ``s_x``: the input's scale, (B, 1)
        per token, for a dynamic linear (a static one uses ``self.s_x``)."""
        if self.op.out == "int8":
            out = y.astype(np.float32) * self.s_out
        elif self.dynamic:
            out = y.astype(np.float32) * self.s_w[None, :] * np.asarray(s_x, np.float32)
        else:
            out = y.astype(np.float32) * (self.s_w * np.float32(self.s_x))[None, :]
        if self.bias is not None:
            out += self.bias
        return out


def make_linear(name: str, kind: str, layer: int, w: np.ndarray, in_amax: float,
                out_amax=None, bias=None, dynamic: bool = False,
                group: int = 0) -> QuantLinear:
    """Quantize one matmul: weights, static input scale and (for int8 outputs) output scales.

    ``in_amax`` is the input's calibrated range (one number: per-tensor); ``out_amax`` the
    output's, per channel (M,) or one number; ``None`` makes an ``out="int32"`` op (the head).
    ``dynamic`` makes a per-token dynamic linear: ``out="int32"`` whatever ``out_amax``;
    ``group`` (with ``dynamic``) cuts it into one op per ``group`` input channels.
    """
    if group:
        ops, s_wg = group_ops(name, kind, layer, w, group)
        b = None if bias is None else np.asarray(bias, np.float32)
        return QuantLinear(op=ops[0], s_w=s_wg.max(axis=0), s_x=act_scale(in_amax),
                           s_out=None, bias=b, dynamic=True, ops=ops, s_wg=s_wg)
    w_q, s_w = quantize_weight(w)
    s_x = act_scale(in_amax)
    if out_amax is None or dynamic:
        m = w_q.shape[0]
        mult, shift = np.zeros(m, np.int64), np.zeros(m, np.int64)
        out, s_out = "int32", None
    else:
        s_out = np.asarray(act_scale(out_amax), np.float32)
        mult, shift = arith.requant_params(s_w * s_x / s_out)
        out = "int8"
    op = MatmulOp(name=name, kind=kind, layer=layer, w_q=w_q, mult=mult.astype(np.int64),
                  shift=shift.astype(np.int64), out=out)
    b = None if bias is None else np.asarray(bias, np.float32)
    return QuantLinear(op=op, s_w=s_w.astype(np.float32), s_x=s_x, s_out=s_out, bias=b,
                       dynamic=bool(dynamic))


def group_ops(name: str, kind: str, layer: int, w: np.ndarray,
              group: int) -> tuple[list[MatmulOp], np.ndarray]:
    """One ``out="int32"`` :class:`MatmulOp` per ``group`` input channels of ``w`` (M x N),
    named ``{name}.g{j}``, each quantized per output channel (:func:`quantize_weight`);
    returns the ops and the float32 (groups, M) weight scales. ``N`` must be a multiple of
    ``group``."""
    w = np.asarray(w)
    m, n = w.shape
    if group < 1 or n % group:
        raise ValueError(f"{name}: {n} input channels are not a multiple of the scale group "
                         f"size {group}")
    ops, scales = [], []
    zeros = np.zeros(m, np.int64)
    for j in range(n // group):
        w_q, s_w = quantize_weight(w[:, j * group:(j + 1) * group])
        ops.append(MatmulOp(name=f"{name}.g{j}", kind=kind, layer=layer, w_q=w_q, mult=zeros,
                            shift=zeros.copy(), out="int32"))
        scales.append(s_w)
    return ops, np.asarray(scales, np.float32)
