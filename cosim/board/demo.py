"""The bring-up demo through a board's host link: a GEMV, then one token of the shipped model.

Both are checked against the golden model: the GEMV element by element
(:func:`~sparktile.golden_model.arith.first_difference`), the token's logits whole. The same
code drives a real board (``--port /dev/ttyUSB0``) and the virtual board (``--port sim``);
``sparktile fpga demo`` (:mod:`sparktile.scripts.fpga`) is its command line.
"""

from __future__ import annotations

import time

__all__ = ["run_demo", "llm_token"]


def run_demo(board, shape, *, m: int, n: int, batch: int, seed: int, llm: bool,
             echo=print) -> dict:
    """The demo on an open :class:`~sparktile.cosim.board.host.Board`: GEMV, then (``llm``) one
    token of the shipped model with every int8 matmul on the board. Returns the report."""

    from ...compiler.mapping import compile_gemv
    from ...golden_model.arith import first_difference, gemv_golden
    from ..benches.gemv import random_problem

    out: dict = {"port": board.t.name, "mesh": str(shape)}
    info = board.ping()
    out["board"] = info
    w, x, mult, shift = random_problem(m, n, batch, seed)
    mapping = compile_gemv(shape, w, mult, shift)
    t0 = time.perf_counter()
    y = board.gemv(mapping, x)
    wall = time.perf_counter() - t0
    diff = first_difference(y, gemv_golden(w, x, mult, shift))
    gemv = {"m": m, "n": n, "batch": batch, "seed": seed, "match": diff is None,
            "wall_s": round(wall, 3)}
    if diff is not None:
        gemv["first_diff"] = diff
    counters = board.read_counters(shape)
    gemv["mac_busy_per_pe"] = counters["mac_busy"].tolist()
    gemv["vectors_per_pe"] = counters["vectors"].tolist()
    out["gemv"] = gemv
    echo(f"GEMV {m}x{n} batch {batch} seed {seed}: "
         f"{'MATCH' if gemv['match'] else 'MISMATCH'} in {wall:.2f} s")
    if llm:
        out["llm"] = llm_token(board, shape, echo)
    out["status"] = board.status()
    out["ok"] = bool(gemv["match"] and out.get("llm", {}).get("match", True))
    return out


def llm_token(board, shape, echo) -> dict:
    """One token of the shipped model (int8 path) with the matmuls on the board."""
    import numpy as np

    from ...compiler.mapping import MappingError
    from ...golden_model import NumpyBackend, load_model
    from .host import BoardBackend

    model = load_model()
    prompt = model.tokenizer.prompt_ids("def") if model.tokenizer else [1]
    model.set_backend(NumpyBackend())
    ref = model.logits(prompt, mode="int8")
    backend = BoardBackend(board, shape)
    model.set_backend(backend)
    t0 = time.perf_counter()
    try:
        got = model.logits(prompt, mode="int8")
    except MappingError as exc:
        # The whole model's matrices must fit the mesh one at a time; on a small board they
        # do not, and the LLM part cannot run there (the GEMV still proves the board).
        echo(f"LLM skipped: a matmul of the shipped model does not fit the {shape} mesh "
             f"({exc})")
        return {"skipped": str(exc)}
    finally:
        model.set_backend(NumpyBackend())
    wall = time.perf_counter() - t0
    match = bool(np.array_equal(np.asarray(got), np.asarray(ref)))
    nxt = int(np.argmax(np.asarray(got)[-1]))
    echo(f"LLM: {len(prompt)} prompt tokens, {backend.ops} matmuls on the board "
         f"({backend.loads} weight loads): logits {'MATCH' if match else 'MISMATCH'}; "
         f"next token {nxt}; {wall:.1f} s")
    return {"prompt_tokens": len(prompt), "matmuls": backend.ops, "loads": backend.loads,
            "match": match, "next_token": nxt, "wall_s": round(wall, 2)}
