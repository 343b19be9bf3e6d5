"""The SRAM plan of a whole decoder on the mesh: what every PE holds, and the longest context.

This is the first piece of the whole-model mapping (issue 13): before any program is written
it answers the question every later step depends on, *does the model fit, and how many
positions of KV cache are left*, and it refuses a model or a context that does not fit with a
:class:`~sparktile.compiler.mapping.MappingError` naming what needs how many words against
what a PE has.

The layout it plans (``docs/architecture.md``, *The whole decoder on the mesh: SRAM plan*):

* **Weights stationary**, every matmul on the whole mesh as today's GEMV mapping
  (:func:`~sparktile.compiler.mapping.gemv_words`: packed int8 rows, one requantization word
  per row, descriptors). The same words in every PE.
* **Every PE** also holds the softmax's exp2 table (256 unsigned 16-bit entries: 128 words)
  and the working buffers of one op at a time: the input slice of the widest matmul, its
  int32 outputs, the query of one head (int8, packed) and its partial ``p . v`` (int32).
* **The activation column** (the east column, where today's GEMV results land, one mesh row
  per slice of output rows) holds the token's state and per-channel constants: its slice of
  the int32 residual stream, the RMSNorm requantization words (two per layer and the final
  norm), the residual requantizations of ``o`` and ``down``, the gate x up requantization,
  every layer's SiLU table (256 int16: 128 words; one per layer because the gate's scale is
  per layer), the RoPE requantization of its q/k channels and the head's requantization.
* **KV cache by position.** Position ``t`` lives whole in one PE: its int8 key (after RoPE)
  and value for every layer and KV head, its RoPE row (``head_dim / 2`` cos and sin values,
  16 bits each) and one scratch word for its score. A PE holds as many positions as its free
  words allow, so the east column, which holds more constants, takes fewer; the context the
  mesh holds is the sum over PEs (WaferLLM also spreads a head's positions over many PEs;
  here every head's keys for one position share a PE, so appending a token writes one PE).

Program words are an estimate until the programmable PE's programs exist: the plan takes
them as a parameter and reports them on their own line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..golden_model.arith import LANES
from ..golden_model.intpath import MAX_POSITIONS
from ..hdl.mesh import MeshShape
from .mapping import MappingError, Region, gemv_words

__all__ = ["SramPlan", "plan_sram", "DEFAULT_PROGRAM_WORDS", "EXP2_TABLE_WORDS",
           "SILU_TABLE_WORDS"]

#: exp2 table of the integer softmax: 256 unsigned Q0.15 entries, two per word.
EXP2_TABLE_WORDS = 128
#: One layer's SiLU table: 256 int16 entries (int8 gate in), two per word.
SILU_TABLE_WORDS = 128
#: Words assumed for a PE's task programs until the programmable PE's programs are
#: compiled (an estimate: a decoder layer is some tens of vector instructions of 2 to 4
#: words, per kind of PE); reported on its own line of the plan.
DEFAULT_PROGRAM_WORDS = 512


def _words(n_int8: int) -> int:
    return math.ceil(n_int8 / LANES)


@dataclass(frozen=True)
class SramPlan:
    """Per-PE SRAM words of a model on a mesh, by purpose, and the context it holds.

    Attributes
    ----------
    mesh : MeshShape
    sram_words : int
        Words of one PE's SRAM.
    weights : int
        Stationary weights, requantization words and descriptors (every PE).
    tables : int
        exp2 table (every PE).
    programs : int
        Task programs (every PE; an estimate, see :data:`DEFAULT_PROGRAM_WORDS`).
    buffers : int
        Working buffers of one op at a time (every PE).
    column_state : int
        The activation column's extra words: residual slice, per-channel constants, SiLU
        tables.
    kv_words_per_position : int
        Words one position takes in the PE that holds it (keys, values, RoPE row, score).
    positions_per_pe : int
        Positions an ordinary PE holds.
    positions_per_column_pe : int
        Positions a PE of the activation column holds.
    max_context : int
        Positions the whole mesh holds (the sum over PEs, at most the int path's
        :data:`~sparktile.golden_model.intpath.MAX_POSITIONS`).
    model_context : int
        The model's own limit (``max_position_embeddings``), for the report.
    """

    mesh: MeshShape
    sram_words: int
    weights: int
    tables: int
    programs: int
    buffers: int
    column_state: int
    kv_words_per_position: int
    positions_per_pe: int
    positions_per_column_pe: int
    max_context: int
    model_context: int

    @property
    def fixed(self) -> int:
        """Words every PE needs before any position."""
        return self.weights + self.tables + self.programs + self.buffers

    def check_context(self, context: int) -> None:
        """Refuse a context longer than the mesh holds, naming the words it would need.

        Raises
        ------
        MappingError
        """
        if context > self.max_context:
            per_pe = math.ceil(context / self.mesh.pes)
            raise MappingError(
                f"a context of {context} positions needs {per_pe} positions x "
                f"{self.kv_words_per_position} words = {per_pe * self.kv_words_per_position} "
                f"KV words in each of the {self.mesh} mesh's {self.mesh.pes} PEs, but a PE "
                f"has {self.sram_words - self.fixed} words left after "
                f"{self.fixed} of weights, tables, programs and buffers "
                f"({self.mesh.sram_kb} KiB); the mesh holds at most {self.max_context} "
                f"positions: use a shorter context, a larger --mesh or more --sram-kb")

    def rows(self) -> list[tuple[str, int]]:
        """The per-PE budget as (what, words) lines, for reports."""
        return [("weights (stationary, every PE)", self.weights),
                ("exp2 table (every PE)", self.tables),
                ("programs (estimate, every PE)", self.programs),
                ("op buffers (every PE)", self.buffers),
                ("activation column state (east column only)", self.column_state),
                ("KV cache + RoPE row per position", self.kv_words_per_position)]


def plan_sram(config, shape: MeshShape, matmul_shapes, *,
              program_words: int = DEFAULT_PROGRAM_WORDS) -> SramPlan:
    """Plan the SRAM of ``config``'s decoder on ``shape`` (see the module docstring).

    Parameters
    ----------
    config : ModelConfig
        The model's shape (``golden_model.config.ModelConfig``).
    shape : MeshShape
        The mesh; its ``sram_words`` is the budget of every PE.
    matmul_shapes : iterable
        The model's matmuls (``Model.matmul_shapes()``: objects with a ``shape`` of
        ``(M, N)``), all placed stationary on the whole mesh.
    program_words : int
        Words of task programs per PE.

    Raises
    ------
    MappingError
        Naming the words that do not fit: the weights alone, the fixed part of every PE, or
        the activation column's state, against the PE's SRAM; or a mesh without room for a
        single position.
    """
    if isinstance(program_words, bool) or not isinstance(program_words, int) or \
            program_words < 0:
        raise MappingError(f"program_words must be an integer >= 0, not {program_words!r}")
    region = Region.whole(shape)
    rows, sram = shape.rows, shape.sram_words
    mms = [tuple(int(d) for d in m.shape) for m in matmul_shapes]
    if not mms:
        raise MappingError("the model has no matmuls to place")
    geo = [gemv_words(m, n, region, shape.acc_depth) for m, n in mms]
    weights = sum(g["words"] for g in geo)
    if weights > sram:
        raise MappingError(
            f"the stationary weights need {weights} SRAM words per PE on the {shape} mesh, "
            f"but a PE has {sram} ({shape.sram_kb} KiB); use a larger --mesh or more --sram-kb")
    c = config
    hd, nh, nkv, layers = c.head_dim, c.num_heads, c.num_kv_heads, c.num_layers
    buffers = (max(g["nw_pe"] for g in geo) + max(g["m_pe"] for g in geo)
               + _words(hd) + hd)
    fixed = weights + EXP2_TABLE_WORDS + program_words + buffers
    if fixed > sram:
        raise MappingError(
            f"every PE needs {fixed} SRAM words ({weights} weights, {EXP2_TABLE_WORDS} exp2 "
            f"table, {program_words} programs, {buffers} op buffers), but a PE has {sram} "
            f"({shape.sram_kb} KiB) on the {shape} mesh; use a larger --mesh or more --sram-kb")
    d_pe = math.ceil(c.hidden_size / rows)
    f_pe = math.ceil(c.intermediate_size / rows)
    qk_pe = math.ceil((nh + nkv) * hd / rows)
    vocab_pe = math.ceil(c.vocab_size / rows)
    column_state = (d_pe                              # residual slice, int32
                    + (2 * layers + 1) * d_pe         # RMSNorm requantization words
                    + 2 * layers * d_pe               # o and down into the residual
                    + layers * f_pe                   # gate x up requantization
                    + layers * SILU_TABLE_WORDS       # SiLU tables
                    + layers * qk_pe                  # RoPE requantization of q and k
                    + layers * math.ceil(nh * hd / rows)  # p . v requantization
                    + vocab_pe)                       # head requantization
    if fixed + column_state > sram:
        raise MappingError(
            f"a PE of the activation column needs {fixed + column_state} SRAM words "
            f"({fixed} as every PE, {column_state} of residual slice, per-channel constants "
            f"and {layers} SiLU tables), but a PE has {sram} ({shape.sram_kb} KiB) on the "
            f"{shape} mesh; use a larger --mesh or more --sram-kb")
    per_pos = 2 * layers * nkv * _words(hd) + hd // 2 + 1
    per_pe = (sram - fixed) // per_pos
    per_col_pe = (sram - fixed - column_state) // per_pos
    max_context = min(per_pe * (shape.pes - rows) + per_col_pe * rows, MAX_POSITIONS)
    if max_context < 1:
        raise MappingError(
            f"no PE of the {shape} mesh has room for one position of KV cache "
            f"({per_pos} words) after {fixed} fixed words of {sram}; use a larger --mesh or "
            f"more --sram-kb")
    return SramPlan(mesh=shape, sram_words=sram, weights=weights, tables=EXP2_TABLE_WORDS,
                    programs=program_words, buffers=buffers, column_state=column_state,
                    kv_words_per_position=per_pos, positions_per_pe=per_pe,
                    positions_per_column_pe=per_col_pe, max_context=max_context,
                    model_context=c.max_position_embeddings)
