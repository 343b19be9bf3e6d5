"""The on-fabric decoder's per-op cycle terms, fitted to measured decodes, for the wafer.

The whole decoder runs on a mesh of programmable cores (:mod:`~sparktile.compiler.
decoder_mapping`): the KV cache is spread by position over the workers (``slots`` positions a
worker), each head's scores, exponentials and weighted sum run on every worker over its slots,
and the heads' maxima, sums and weighted sums, like a norm's sums of squares and normalized
channels, meet at the hub through the reduction tree and go back through the broadcast tree.
The workers are numbered by their distance from the hub and each exchange's tree is pruned to
the workers with a share of it, so its depth is that of the farthest of them
(:func:`prefix_depth`): the KV cache's first ``ceil(context / slots)`` workers for the
attention's, the residual channels' holders for a norm's. So a token's cycles
in each of these ops are linear in a few quantities that a wafer's layer also has
(:data:`TERMS`; each term's coefficient is in cycles):

* ``fixed``: the op's instructions that run once (per layer, or per norm);
* ``per_head``: once per head (its instructions, the hub's softmax reciprocal);
* ``per_hop``: once per hop of the op's pruned trees (a combine's scalar crossing a worker);
* ``per_head_slot``: per head and KV slot of a worker, the slots padded to whole words
  (``lanes x ceil(slots / lanes)``, one with one slot: the element-wise instructions run over
  all heads' padded slots at once: the mask, the exponential's steps, the probability's
  digits);
* ``per_head_slot_word``: per head, slot and GEMV word of its group's key row (``head_dim /
  lanes`` words: the key cache is kept by KV group, so a head's score GEMV reads only its
  group's keys, one word a cycle);
* ``per_slot_reduction_op``, ``per_slot_reduction_element``: a worker's max and sum of each
  head over its slots before the tree, as the compiler picks it
  (:func:`~sparktile.compiler.decoder_mapping.slot_reduction`: nothing with one slot, an
  element-wise op over the heads per further slot with a few, a REDUCE per head with many),
  by instruction and by element;
* ``per_head_value_word``: per head, value channel and word of a value column
  (``head_dim x ceil(slots / lanes)``: the weighted sum's GEMVs over the transposed values,
  one a probability digit), with more than one slot a worker;
* ``per_kv_head_value_word``: the same per KV head: the GEMV that sums a group's values over
  its slots (against int8 ones: the constant 256 each slot's probability carries beside its
  two digits), with more than one slot a worker;
* ``digits``, ``digits_per_head``, ``digits_per_head_channel``: the weighted sum's split of
  the probabilities into two int8 digits and the recombination of the digit GEMVs' sums
  (over every head's channels), which run only with more than one slot a worker (with one,
  the slot's values times its probability: ``per_head`` and ``per_head_channel`` cover it;
  the split's passes over the padded slots are ``per_head_slot``'s, which with one word of
  slots a head is four times ``per_head``);
* ``per_head_channel``: per head and channel of the head's output (its weighted sum gathered
  through the tree at the hub, requantized and sent back);
* ``two_stream_channel``: the same count again where the hub takes the weighted sums on two
  streams (KV workers in both of its subtrees): it adds them into its XBUF as they come and
  requantizes them in a second pass, where from one stream it requantizes them as they
  arrive (the compiler's choice, ``decoder_mapping``); zero for one stream;
* ``per_channel``: per residual channel a worker holds (a norm's squares and scaling);
* ``per_hidden_word``: per word of the whole hidden vector (a norm's output gathered at the
  hub and sent back whole, ``hidden x bytes / 4`` 32-bit words).

:func:`measure_decodes` runs decodes on the mesh of ISSs, whose cycle model the calibration
checks against the RTL's counter first (:func:`check_against_rtl`), and records each op's cycles
as the hub sees them (:meth:`~sparktile.compiler.decoder_mapping.DecoderMapping.by_op`: an op's
time includes its waits on the trees); :func:`fit_decoder_terms` solves each op's terms by
least squares; :func:`decoder_op_cycles` evaluates them for a wafer's layer;
:func:`heldout_check` compares them with a decode the fit never saw. No term is set by hand:
every one comes from measured cycles, and they change when the decoder's programs do.
"""

from __future__ import annotations

import math
import time

import numpy as np

from sparktile.errors import UserError

__all__ = ["ATTENTION_OPS", "DECODER_OPS", "TERMS", "DecoderTermsError", "FIT_MESHES",
           "FIT_MODELS", "FIT_CONTEXTS", "RTL_CHECKS", "RTL_TOLERANCE", "mesh_depth",
           "prefix_depth", "summed_streams", "kv_placement",
           "worker_channels", "run_record", "measure_decodes", "check_against_rtl",
           "fit_decoder_terms", "predict_op", "decoder_op_cycles", "heldout_check",
           "run_decoder_calibration"]


class DecoderTermsError(UserError, ValueError):
    """Measurements that cannot determine the decoder's terms, or a cycle model that disagrees
    with the RTL (so its per-op split cannot be trusted)."""


ATTENTION_OPS = ("attention_scores", "softmax", "weighted_sum")
DECODER_OPS = (*ATTENTION_OPS, "norm")
#: The fitted terms of each op (see the module docstring), per layer (attention) or per norm.
TERMS = {
    "attention_scores": ("fixed", "per_head", "per_hop", "per_head_slot", "per_head_slot_word"),
    "softmax": ("fixed", "per_head", "per_hop", "per_head_slot", "per_slot_reduction_op",
                "per_slot_reduction_element"),
    "weighted_sum": ("fixed", "per_head", "per_hop", "per_head_slot", "per_head_value_word",
                     "per_kv_head_value_word", "per_head_channel", "two_stream_channel",
                     "digits", "digits_per_head", "digits_per_head_channel"),
    "norm": ("fixed", "per_channel", "per_hop", "per_hidden_word", "matmul_wait"),
}
#: Where each term's cycles go in the wafer estimate's categories (:data:`~.gemv_time.
#: CATEGORIES`): work on the PEs is compute, what crosses the trees is reduction, what runs
#: once is task overhead.
CATEGORY = {"fixed": "task_overhead", "per_head": "task_overhead", "per_hop": "reduction",
            "per_head_slot": "compute", "per_head_slot_word": "compute",
            "per_head_value_word": "compute", "per_kv_head_value_word": "compute",
            "per_head_channel": "reduction",
            "two_stream_channel": "reduction",
            "per_slot_reduction_op": "compute", "per_slot_reduction_element": "compute",
            "per_channel": "compute", "per_hidden_word": "reduction", "matmul_wait": None,
            "digits": "task_overhead", "digits_per_head": "task_overhead",
            "digits_per_head_channel": "compute"}


def quantities(*, heads: int, kv_heads: int, head_dim: int, slots: float, depth: float,
               channels: float,
               hidden: int, lanes: int = 4, word_bytes: float = 1.0,
               matmul_words: float = 0.0, two_streams: bool = True) -> dict:
    """The multiplier of every term (:data:`CATEGORY`'s keys) for one layer or norm.

    ``lanes``: MACs a PE does a cycle (the RTL core's 4 int8 lanes a word); ``word_bytes``:
    bytes of one element (1 for the RTL's int8; the wafer's data type), which sets how many
    32-bit words the hidden vector takes on the trees. ``matmul_words``: GEMV words a worker
    runs just before a norm (o's and down's rows of its channels, per norm on average): the
    hub waits for them inside the norm, so the fit needs them to tell the norm's own cycles
    apart; the wafer estimate times its matmuls itself and passes 0. ``two_streams``: the
    attention's sums reach the root on two streams (``two_stream_channel``; the wafer
    estimate decides it as the compiler does, :func:`summed_streams`)."""
    from ...compiler.decoder_mapping import slot_reduction_size

    words = math.ceil(slots / lanes)                # a head's slots in whole words
    padded = lanes * words if slots > 1 else math.ceil(slots)   # one slot is not padded
    red_ops, red_elements = slot_reduction_size(math.ceil(slots), heads)
    digits = 1.0 if slots > 1 else 0.0              # the weighted sum by probability digits
    return {"fixed": 1.0, "per_head": float(heads), "per_hop": float(depth),
            "per_head_slot": heads * float(padded),
            "per_head_slot_word": heads * float(slots) * head_dim / float(lanes),
            "per_head_value_word": digits * heads * float(head_dim) * words,
            "per_kv_head_value_word": digits * kv_heads * float(head_dim) * words,
            "digits": digits, "digits_per_head": digits * heads,
            "digits_per_head_channel": digits * heads * float(head_dim),
            "per_slot_reduction_op": float(red_ops),
            "per_slot_reduction_element": float(red_elements),
            "per_head_channel": float(heads * head_dim),
            "two_stream_channel": float(heads * head_dim) if two_streams else 0.0,
            "per_channel": float(channels),
            "per_hidden_word": hidden * word_bytes / 4.0, "matmul_wait": float(matmul_words)}


#: Decodes the fit measures: meshes of every depth from 2 to 10 (rows and columns both), models
#: that differ in heads and head size (so the per-head, per-slot and per-word terms separate;
#: head sizes 8 to 32, the held-out model's) and hidden size (channels a worker), contexts
#: from one slot a worker to many.
FIT_MESHES = ((2, 2), (2, 3), (3, 1), (3, 3), (4, 4), (1, 8), (2, 4), (6, 6))
_BASE = dict(num_layers=1, intermediate_size=32, vocab_size=32, seed=1)
FIT_MODELS = (
    dict(_BASE, hidden_size=32, num_heads=2, num_kv_heads=1, head_dim=8),
    dict(_BASE, hidden_size=32, num_heads=1, num_kv_heads=1, head_dim=16),
    dict(_BASE, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8),
    dict(_BASE, hidden_size=64, num_heads=2, num_kv_heads=1, head_dim=8),
    dict(_BASE, hidden_size=128, num_heads=2, num_kv_heads=1, head_dim=8),
    dict(_BASE, hidden_size=32, num_heads=2, num_kv_heads=1, head_dim=8,
         intermediate_size=256),
    dict(_BASE, hidden_size=64, num_heads=2, num_kv_heads=1, head_dim=32),
)
FIT_CONTEXTS = (4, 16, 40)
#: The decodes also run on the RTL (the core meshes the tests build, 16 KiB), where the mesh
#: ISS's cycles must equal the RTL counter's within :data:`RTL_TOLERANCE`.
RTL_CHECKS = (((2, 2), 0, 16), ((2, 3), 1, 4), ((3, 1), 0, 4), ((2, 3), 2, 16))
RTL_TOLERANCE = 0.02


def mesh_depth(rows: int, cols: int) -> int:
    """Hops from the hub (0, 0) to the farthest worker through the trees."""
    return rows - 1 + cols - 1


def _nearest_depth(rows: int, cols: int, n: int, first_col: int) -> int:
    """Hops from the hub to the farthest of the ``n`` workers nearest it in columns
    ``first_col`` on (``n`` at most the tiles there, the hub excepted)."""
    seen = 0
    for t in range(1, rows + cols - 1):
        seen += max(0, min(t, cols - 1) - max(first_col, t - rows + 1) + 1)   # t hops away
        if seen >= n:
            return t
    return 0


def prefix_depth(rows: int, cols: int, n: int) -> int:
    """Hops from the hub (0, 0) to the farthest of the ``n`` workers nearest it (the
    decoder's :func:`~sparktile.compiler.decoder_mapping.worker_order`), through the trees
    pruned to them."""
    return _nearest_depth(rows, cols, min(n, rows * cols - 1), 0)


def summed_depth(rows: int, cols: int, n: int) -> int:
    """Hops from the hub to the farthest of the ``n`` workers of an exchange the hub sums
    (the KV cache's; :func:`~sparktile.compiler.decoder_mapping.summed_workers`): the
    nearest of the hub's east subtree (columns 1 on) if it holds ``n``, else
    :func:`prefix_depth`."""
    n = min(n, rows * cols - 1)
    return _nearest_depth(rows, cols, n, 1 if rows * (cols - 1) >= n else 0)


def summed_streams(rows: int, cols: int, n: int) -> int:
    """Streams on which the hub takes an exchange it sums over ``n`` workers
    (:func:`~sparktile.compiler.decoder_mapping.summed_workers`): one where they fit its east
    subtree (or the mesh is one column), else two."""
    n = min(n, rows * cols - 1)
    return 1 if rows * (cols - 1) >= n or cols == 1 else 2


def kv_placement(rows: int, cols: int, context: int, slots: int,
                 lanes: int = 4) -> tuple[int, int]:
    """``(slots, workers)`` of a KV cache of ``context`` positions at ``slots`` a worker, as
    the compiler places it (:func:`~sparktile.compiler.decoder_mapping.one_stream_slots`:
    one slot more on fewer workers where that brings them into the root's east subtree, one
    stream of sums, without another word of padded slots)."""
    from ...compiler.decoder_mapping import one_stream_slots
    slots = one_stream_slots(rows, cols, context, slots, lanes)
    return slots, math.ceil(context / slots)


def worker_channels(hidden: int, workers: int) -> int:
    """Residual channels a worker holds: ``ceil(d / W)`` up to a multiple of 4."""
    return 4 * math.ceil(math.ceil(hidden / workers) / 4)


def run_record(mapping, model_fields: dict, context: int, token_cycles: int, by_op: dict) -> dict:
    """One measured decode as the fit reads it."""
    shape = mapping.shape
    channels = worker_channels(model_fields["hidden_size"], len(mapping.workers))
    holders = math.ceil(model_fields["hidden_size"] / channels)
    return {"mesh": f"{shape.rows}x{shape.cols}", "depth": mesh_depth(shape.rows, shape.cols),
            "kv_depth": summed_depth(shape.rows, shape.cols, mapping.kv_workers),
            "channel_depth": prefix_depth(shape.rows, shape.cols, holders),
            "workers": len(mapping.workers), "slots": mapping.slots, "context": context,
            "heads": model_fields["num_heads"], "kv_heads": model_fields["num_kv_heads"],
            "head_dim": model_fields["head_dim"], "hidden": model_fields["hidden_size"],
            "layers": model_fields["num_layers"],
            "intermediate": model_fields["intermediate_size"],
            "channels": channels,
            # the hub's children with KV workers below them: column 0 (south), the rest (east)
            "kv_two_streams": len({min(c, 1) for _r, c in mapping.kv_tiles}) == 2,
            "cycles": int(token_cycles), "by_op": {op: int(by_op.get(op, 0))
                                                   for op in DECODER_OPS}}


def _quantities(r: dict, op: str) -> dict:
    layers = r["layers"]
    # o's rows (heads x head_dim / 4 words each) before the MLP norm, down's (intermediate / 4)
    # before the next layer's attention norm and the final norm
    words = r["channels"] * layers * (r["heads"] * r["head_dim"] + r["intermediate"]) / 4.0
    return quantities(heads=r["heads"], kv_heads=r["kv_heads"], head_dim=r["head_dim"],
                      slots=r["slots"],
                      depth=r["kv_depth"] if op in ATTENTION_OPS else r["channel_depth"],
                      channels=r["channels"], hidden=r["hidden"],
                      matmul_words=words / (2.0 * layers + 1.0),
                      # a record older than the one-stream path: always the second pass
                      two_streams=r.get("kv_two_streams", True))


def _features(op: str, r: dict) -> list[float]:
    q = _quantities(r, op)
    return [q[t] for t in TERMS[op]]


def _target(op: str, r: dict) -> float:
    """The op's cycles per layer (attention) or per norm (two a layer and the final one)."""
    if op == "norm":
        return r["by_op"][op] / (2.0 * r["layers"] + 1.0)
    return r["by_op"][op] / float(r["layers"])


def measure_decodes(meshes=FIT_MESHES, models=FIT_MODELS, contexts=FIT_CONTEXTS, *,
                    sram_kb: int = 16, echo=None) -> list[dict]:
    """Decode one position of each model on each mesh at each context on the mesh of ISSs
    (bit-exact against the golden model); a combination that does not fit the SRAM is
    skipped. Returns :func:`run_record` records."""
    from ...compiler.decoder_mapping import compile_decoder
    from ...compiler.mapping import MappingError
    from ...compiler.mesh_iss import decode_on_iss
    from ...cosim.benches.decode import decode_model
    from ...hdl.mesh import MeshShape

    runs = []
    for fields in models:
        lm = decode_model(random=fields)
        t0 = time.perf_counter()
        for rows, cols in meshes:
            for ctx in contexts:
                try:
                    mapping = compile_decoder(lm, MeshShape(rows, cols, pe="core",
                                                            sram_kb=sram_kb), ctx)
                except MappingError:
                    continue
                res = decode_on_iss(mapping, lm, [1], 1)
                if res["first_diff"] is not None:
                    raise DecoderTermsError(f"the decode of {fields} on {rows}x{cols} (context "
                                            f"{ctx}) differs from the golden model: "
                                            f"{res['first_diff']}")
                runs.append(run_record(mapping, fields, ctx, res["token_cycles"][0],
                                       res["by_op"][0]))
        if echo:
            echo(f"  decoder {fields['hidden_size']}/{fields['num_heads']}x"
                 f"{fields['head_dim']}: {len(runs)} decodes so far "
                 f"({time.perf_counter() - t0:.1f} s)")
    return runs


def check_against_rtl(checks=RTL_CHECKS, *, models=FIT_MODELS, seed: int = 1,
                      echo=None) -> list[dict]:
    """Run decodes on the RTL and on the mesh of ISSs; every position's cycles must agree
    within :data:`RTL_TOLERANCE` (the per-op split of the fit comes from the ISS's timeline).

    Raises
    ------
    DecoderTermsError
        When a decode differs from the golden model or the two cycle counts disagree.
    """
    from ...compiler.decoder_mapping import compile_decoder
    from ...compiler.mesh_iss import decode_on_iss
    from ...cosim.benches.decode import decode_model, decode_run
    from ...cosim.sim.session import run_job
    from ...hdl.mesh import MeshShape

    out = []
    for (rows, cols), model_index, ctx in checks:
        fields = models[model_index]
        ids, new = [1, 2], 2
        t0 = time.perf_counter()
        shape = MeshShape(rows, cols, pe="core")
        rtl = run_job(shape, decode_run, {"ids": ids, "max_tokens": new, "random": fields,
                                          "context": ctx, "seed": seed}, seed=seed)
        if not rtl.match_golden:
            raise DecoderTermsError(f"the RTL decode on {rows}x{cols} differs from the golden "
                                    f"model: {rtl.first_diff}")
        lm = decode_model(random=fields)
        iss = decode_on_iss(compile_decoder(lm, shape, ctx), lm, ids, new)
        for pos, (a, b) in enumerate(zip(iss["token_cycles"], rtl.token_cycles, strict=True)):
            err = (a - b) / b
            if abs(err) > RTL_TOLERANCE:
                raise DecoderTermsError(
                    f"the mesh ISS's cycles are {100 * err:+.2f} % off the RTL counter on "
                    f"{rows}x{cols} (model {model_index}, context {ctx}, position {pos}: ISS "
                    f"{a}, RTL {b}), beyond {100 * RTL_TOLERANCE:.0f} %: fix the cycle model "
                    f"(sparktile/compiler/mesh_iss.py) before fitting from it")
        out.append({"mesh": f"{rows}x{cols}", "model": model_index, "context": ctx,
                    "rtl_cycles": list(rtl.token_cycles), "iss_cycles": iss["token_cycles"],
                    "max_abs_error_pct": max(100 * abs(a - b) / b for a, b in
                                             zip(iss["token_cycles"], rtl.token_cycles,
                                                 strict=True))})
        if echo:
            echo(f"  decoder on the RTL {rows}x{cols} context {ctx}: "
                 f"{rtl.token_cycles[-1]:,} cycles/token, mesh ISS "
                 f"{iss['token_cycles'][-1]:,} ({time.perf_counter() - t0:.1f} s)")
    return out


def _nonnegative_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (Lawson and Hanson's active set): a term is a
    cost, never a saving. An unconstrained fit can trade a term against a correlated one
    (the norm's hops against its channels a worker, which fall as the mesh grows) and give it
    a negative coefficient that the wafer's trees, 30 times deeper than the fit's, would turn
    into negative cycles."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    for _ in range(3 * n + 10):
        w = a.T @ (y - a @ x)
        free = ~passive & (w > 1e-9 * max(1.0, float(np.abs(w).max())))
        if not free.any():
            break
        passive[int(np.argmax(np.where(free, w, -np.inf)))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], y, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            step = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + step * (z - x)
            passive &= x > 1e-12
    return x


def fit_decoder_terms(runs: list[dict]) -> tuple[dict, dict]:
    """Least-squares fit of every op's :data:`TERMS` to measured ``runs``, every coefficient
    non-negative (:func:`_nonnegative_lstsq`).

    Returns ``(terms, report)``: ``terms[op][term]`` in cycles, and per op the rank, the
    residual of every run and the largest relative one.

    Raises
    ------
    DecoderTermsError
        If the runs cannot separate an op's terms (too few meshes, models or contexts).
    """
    terms, report = {}, {}
    for op in DECODER_OPS:
        names = TERMS[op]
        a = np.array([_features(op, r) for r in runs], dtype=float)
        y = np.array([_target(op, r) for r in runs], dtype=float)
        rank = int(np.linalg.matrix_rank(a)) if len(runs) else 0
        if rank < len(names):
            raise DecoderTermsError(
                f"the {len(runs)} decodes determine only {rank} of the {len(names)} terms of "
                f"{op} ({', '.join(names)}): measure meshes of different depths, models with "
                f"different heads and head sizes, and more than one context")
        sol = _nonnegative_lstsq(a, y)
        terms[op] = dict(zip(names, (float(v) for v in sol), strict=True))
        pred = a @ sol
        rel = np.abs(pred - y) / np.maximum(y, 1.0)
        report[op] = {"rank": rank, "runs": len(runs),
                      "max_abs_error_pct": float(100 * rel.max()),
                      "rms_error_pct": float(100 * np.sqrt(np.mean(rel ** 2)))}
    return terms, report


def predict_op(terms: dict, op: str, run: dict) -> float:
    """The fitted cycles of ``op`` for a measured (or planned) ``run`` record, whole token."""
    v = sum(c * terms[op][n] for c, n in zip(_features(op, run), TERMS[op], strict=True))
    return v * ((2.0 * run["layers"] + 1.0) if op == "norm" else float(run["layers"]))


def decoder_op_cycles(terms: dict, *, kv_depth: float, channel_depth: float,
                      **sizes) -> dict:
    """Cycles of one layer's attention ops and of one norm, by term: ``{op: {term:
    cycles}}``; ``kv_depth`` and ``channel_depth``: the depths of the attention's and the
    norm's pruned trees; ``sizes`` as :func:`quantities` takes them (a wafer layer's heads,
    head size, KV slots a PE, channels a PE, hidden size, lanes, element bytes)."""
    out = {}
    for op in DECODER_OPS:
        q = quantities(depth=kv_depth if op in ATTENTION_OPS else channel_depth, **sizes)
        out[op] = {t: terms[op][t] * q[t] for t in TERMS[op]}
    return out


def heldout_check(terms: dict, *, mesh=(8, 8), sram_kb: int = 64, context: int | None = None,
                  echo=None) -> dict:
    """The shipped model on the 8x8 core mesh (64 KiB, its largest context unless
    ``context``): each op's cycles as the mesh ISS measures them against the fitted terms'
    prediction. The fit's models are tiny (one layer, up to 4 heads, 32 to 128 hidden, at most
    40 positions); this one has 4 layers, hidden 128, intermediate 352 and 9 slots a worker
    on a deeper mesh (depth 14), so it tests the terms' form, not only their values."""
    from ...compiler.decoder_mapping import compile_decoder
    from ...compiler.mesh_iss import decode_on_iss
    from ...cosim.benches.decode import decode_model
    from ...hdl.mesh import MeshShape

    t0 = time.perf_counter()
    lm = decode_model()
    cfg = lm.config
    fields = {"num_heads": cfg.num_heads, "num_kv_heads": cfg.num_kv_heads,
              "head_dim": cfg.head_dim, "hidden_size": cfg.hidden_size,
              "num_layers": cfg.num_layers, "intermediate_size": cfg.intermediate_size}
    mapping = compile_decoder(lm, MeshShape(*mesh, pe="core", sram_kb=sram_kb), context)
    res = decode_on_iss(mapping, lm, [1], 1)
    rec = run_record(mapping, fields, mapping.max_context, res["token_cycles"][0],
                     res["by_op"][0])
    ops = {}
    for op in DECODER_OPS:
        pred = predict_op(terms, op, rec)
        got = rec["by_op"][op]
        ops[op] = {"measured": got, "predicted": pred,
                   "error_pct": 100.0 * (pred - got) / got if got else 0.0}
    if echo:
        echo(f"  held out: {cfg.name} on {mesh[0]}x{mesh[1]} context {rec['context']}: " +
             ", ".join(f"{op} {v['measured']:,} vs {v['predicted']:,.0f} "
                       f"({v['error_pct']:+.1f} %)" for op, v in ops.items()) +
             f" ({time.perf_counter() - t0:.0f} s)")
    return {"model": cfg.name, "mesh": rec["mesh"], "context": rec["context"],
            "slots": rec["slots"], "depth": rec["depth"], "kv_depth": rec["kv_depth"],
            "channel_depth": rec["channel_depth"], "token_cycles": rec["cycles"],
            "ops": ops}


def run_decoder_calibration(*, seed: int = 1, echo=None, heldout: bool = True) -> dict:
    """Check the mesh ISS against the RTL, measure, fit, and check on the held-out model.
    Returns the ``decoder`` record of a calibration file."""
    rtl = check_against_rtl(seed=seed, echo=echo)
    runs = measure_decodes(echo=echo)
    terms, fit = fit_decoder_terms(runs)
    return {"terms": terms, "fit": fit, "rtl_check": rtl, "runs": runs,
            "heldout": heldout_check(terms, echo=echo) if heldout else None,
            "features": {op: list(TERMS[op]) for op in DECODER_OPS}}
