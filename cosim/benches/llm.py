"""Hardware in the loop: the golden LLM generates with every matmul executed by the RTL mesh.

:class:`RtlBackend` plugs into the golden model's matmul dispatch point
(:meth:`sparktile.golden_model.Model.set_backend`). The model's code is ordinary blocking
Python, so :func:`llm_run` runs it in a cocotb *bridge* thread; each matmul hands its int8
activations to the simulator through a *resume* call, which streams them into the mesh, waits
for the results at the east edge (Verilator runs free meanwhile), and returns them. Every result
is compared element for element with :class:`~sparktile.golden_model.NumpyBackend` before the
model sees it; the first mismatch stops the run with the layer, the matmul, the element, the
cycle and the seed. That comparison is the golden answer, computed once: the model generates
from the RTL's own results, so when every matmul matched, its tokens are the golden model's
(a caller that wants an independent end-to-end check generates with the golden model itself,
as the tests do).

Weights are *stationary* when every matrix fits the mesh's SRAM at once (each at its own SRAM
base, all sharing one set of routes; only the descriptor address selects the matrix), else
*streamed*: the host reloads the mesh with one matrix before each matmul.

Layout. ``strips`` (the default) cuts each matrix by rows over the mesh's column strips
(:mod:`~sparktile.compiler.strips`: no reduction chain across the mesh, each strip's results
on its own color); ``chain`` is the first slice's mapping (rows over mesh rows, columns over
mesh columns, partial sums along a chain of every column), kept for comparison.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ...compiler.mapping import GemvMapping, MappingError, compile_gemv
from ...compiler.program import ConfigProgram
from ...compiler.strips import (
    LAYOUTS,
    compile_gemv_strips,
    layout_cycles,
    layout_words,
    split_strips,
    strip_count,
    strip_words,
    strips_cycles,
)
from ...golden_model.arith import first_difference
from ...golden_model.backend import INDEPENDENT_KINDS, MatmulOp, NumpyBackend
from ..sim.fabric import STATUS, Fabric, FabricHang, Recording
from ..sim.registry import BenchResult, bench

__all__ = ["RtlBackend", "MatmulMismatch", "mismatch_message", "plan_weights", "share_strips",
           "independent_groups", "stationary_bases", "llm_run"]

WEIGHT_MODES = ("auto", "stationary", "streaming")


class _Cancelled(Exception):
    """Raised in the token callback to end a generation the caller cancelled."""


def mismatch_message(info: dict) -> str:
    """One line naming the first differing element of a :class:`MatmulMismatch` (its
    ``info``, as it also reaches the CLI through the job's result)."""
    return (f"{info['matmul']} (layer {info['layer']}, {info['phase']}, token "
            f"{info['token']}): element [{info['vector']}][{info['index']}] is {info['got']} on "
            f"the RTL, {info['expected']} in the golden model; cycle {info['cycle']}, seed "
            f"{info['seed']}")


class MatmulMismatch(RuntimeError):
    """The RTL's result differs from the golden backend's."""

    def __init__(self, info: dict):
        self.info = info
        super().__init__(mismatch_message(info))


def stationary_bases(shape, ops: list[MatmulOp], layout: str = "strips") -> tuple[list, int]:
    """Each matrix's first SRAM word with every matrix stationary, and the words per PE that
    takes. The chain layout stacks the matrices in every PE; the strips layout stacks them
    per strip, so the matrices that share the strips (:func:`share_strips`) sit side by side
    at one base."""
    bases = []
    if layout != "strips":
        top = 0
        for op in ops:
            bases.append(top)
            top += layout_words(shape, *op.shape, layout)
        return bases, top
    shares = share_strips(shape, ops)
    free = [0] * strip_count(shape)
    for op in ops:
        strips = shares[id(op)]
        base = max(free[s] for s in strips)
        for s in strips:
            free[s] = base + strip_words(shape, *op.shape, len(strips))
        bases.append(base)
    return bases, max(free)


def plan_weights(shape, ops: list[MatmulOp], mode: str = "auto",
                 layout: str = "strips") -> tuple[str, int]:
    """Choose stationary or streaming weights; returns ``(mode, words per PE needed)``: all
    matrices (stationary, :func:`stationary_bases`) or the largest one (streaming), placed per
    ``layout``.
    ``ops`` may be :class:`~sparktile.golden_model.backend.MatmulShape` s (only names and
    shapes are read).

    Raises
    ------
    MappingError
        For an unknown mode, stationary weights that do not fit, or a single matrix that does
        not fit even alone (streaming).
    """
    if mode not in WEIGHT_MODES:
        raise MappingError(f"weights mode must be one of {', '.join(WEIGHT_MODES)}, not {mode!r}")
    if layout not in LAYOUTS:
        raise MappingError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    sizes = [layout_words(shape, *op.shape, layout) for op in ops]
    total = stationary_bases(shape, ops, layout)[1]
    if mode == "stationary" and total > shape.sram_words:
        raise MappingError(f"stationary weights need {total} SRAM words per PE on the {shape} "
                           f"mesh, but a PE has {shape.sram_words} ({shape.sram_kb} KiB); use "
                           f"--weights streaming, a larger --mesh or more --sram-kb")
    if max(sizes) > shape.sram_words:
        big = ops[int(np.argmax(sizes))]
        raise MappingError(f"{big.name} ({big.shape[0]}x{big.shape[1]}) alone needs "
                           f"{max(sizes)} SRAM words per PE on the {shape} mesh, but a PE has "
                           f"{shape.sram_words}; use a larger --mesh or more --sram-kb")
    if mode == "auto":
        mode = "stationary" if total <= shape.sram_words else "streaming"
    # Streaming holds one matrix at a time: its need is the largest, not the sum.
    return mode, (total if mode == "stationary" else max(sizes))


def independent_groups(ops: list[MatmulOp]) -> list[list[MatmulOp]]:
    """The matmuls a layer issues together through ``matmul_many``
    (:data:`~sparktile.golden_model.backend.INDEPENDENT_KINDS`: q, k and v; gate and up),
    each group of two or more in ``ops``' order."""
    groups = []
    for kinds in INDEPENDENT_KINDS:
        for layer in sorted({op.layer for op in ops}):
            group = [op for op in ops if op.layer == layer and op.kind in kinds]
            if len(group) >= 2:
                groups.append(group)
    return groups


def share_strips(shape, ops: list[MatmulOp]) -> dict[int, range]:
    """The strips of each matmul (keyed by ``id(op)``) in the ``strips`` layout: the mesh's
    strips shared, in proportion to MACs, by each of :func:`independent_groups`, so that its
    matmuls run at once; every strip for the others, and for all of them on a mesh with
    fewer strips than a group has matmuls."""
    out = {id(op): range(strip_count(shape)) for op in ops}
    for group in independent_groups(ops):
        if len(group) > strip_count(shape):
            continue
        sizes = [o.shape[0] * o.shape[1] for o in group]
        for op, strips in zip(group, split_strips(shape, sizes), strict=True):
            out[id(op)] = strips
    return out


@dataclass
class _Stat:
    cycles: float = 0
    macs: int = 0
    calls: int = 0


class RtlBackend:
    """Executes :class:`MatmulOp` s on the simulated mesh, checking each against numpy.

    Parameters
    ----------
    fabric : Fabric
        The running simulation.
    ops : list of MatmulOp
        Every matmul the model will issue (``model.matmul_ops()``).
    weights : str
        ``auto``, ``stationary`` or ``streaming``.
    seed : int
        Reported with any mismatch.
    corrupt : str, optional
        Fault injection for testing the checker: the named matrix is loaded into the mesh with
        one weight's lowest bit flipped (row 0, column 0), as a bad weight load would.
    layout : str
        ``strips`` or ``chain`` (:data:`LAYOUTS`).
    """

    def __init__(self, fabric: Fabric, ops: list[MatmulOp], weights: str = "auto",
                 seed: int = 0, corrupt: str | None = None, layout: str = "strips"):
        self.corrupt = corrupt
        self.layout = layout
        self.fabric = fabric
        self.shape = fabric.shape
        self.ops = ops
        self.seed = seed
        self.mode, self.words = plan_weights(self.shape, ops, weights, layout)
        # Stationary weights on strips: independent matmuls share the strips (streaming
        # weights hold one matrix at a time, on every strip).
        self.strips = share_strips(self.shape, ops) if self.mode == "stationary" else {}
        self.golden = NumpyBackend()
        self.mappings: dict[int, GemvMapping] = {}
        self.phase = "prefill"
        self.stats: dict[str, dict[str, _Stat]] = {"prefill": defaultdict(_Stat),
                                                   "decode": defaultdict(_Stat)}
        self.sim_s = 0.0
        self.config_cycles = 0
        self.matmuls = 0
        self.token_cycles: list[int] = []   # cycles per token (index 0 = prefill)
        self._cur = 0
        if self.mode == "stationary":
            prog = ConfigProgram(self.shape)
            for op, base in zip(ops, stationary_bases(self.shape, ops, layout)[0], strict=True):
                self.mappings[id(op)] = self._compile(op, base, prog)
            self._program = prog

    def _compile(self, op: MatmulOp, base: int, program=None):
        out_int32 = op.out == "int32"
        w = op.w_q
        if op.name == self.corrupt:
            w = w.copy()
            w[0, 0] ^= 1
        if self.layout == "strips":
            return compile_gemv_strips(self.shape, w, op.mult, op.shift, out_int32=out_int32,
                                       base=base, program=program,
                                       strips=self.strips.get(id(op)))
        return compile_gemv(self.shape, w, op.mult, op.shift, out_int32=out_int32, base=base,
                            program=program)

    async def preload(self) -> None:
        """Stationary weights: load every matrix once, through the fabric."""
        if self.mode == "stationary":
            t0 = time.perf_counter()
            self.config_cycles += await self.fabric.configure(self._program)
            self.sim_s += time.perf_counter() - t0

    def next_token(self) -> None:
        """Called as each token is produced: later matmuls belong to the next decode step."""
        self.token_cycles.append(self._cur)
        self._cur = 0
        self.phase = "decode"

    async def amatmul(self, op: MatmulOp, x_q: np.ndarray) -> np.ndarray:
        return (await self.amatmul_many([(op, x_q)]))[0]

    def _concurrent(self, pairs) -> bool:
        """Whether ``pairs`` can run at once: stationary, each on its own strips."""
        if len(pairs) < 2 or self.mode != "stationary" or self.layout != "strips":
            return False
        used: set[int] = set()
        for op, _x in pairs:
            mine = set(self.mappings[id(op)].strips)
            if used & mine:
                return False
            used |= mine
        return True

    async def amatmul_many(self, pairs: list[tuple[MatmulOp, np.ndarray]]) -> list[np.ndarray]:
        """Run independent matmuls, at once when they sit on disjoint strips (see
        :func:`share_strips`), else one after another; each result checked."""
        if not self._concurrent(pairs):
            return [(await self._run([(op, x)]))[0] for op, x in pairs]
        return await self._run(pairs)

    async def _run(self, pairs) -> list[np.ndarray]:
        fabric = self.fabric
        maps = []
        for op, _x in pairs:
            mp = self.mappings.get(id(op))
            if mp is None:  # streaming: this matrix alone, at SRAM word 0
                mp = self._compile(op, 0)
                t0 = time.perf_counter()
                self.config_cycles += await fabric.configure(mp.program)
                self.sim_s += time.perf_counter() - t0
            maps.append(mp)
        expect = 0
        for (_op, x_q), mp in zip(pairs, maps, strict=True):
            for (side, col), (pay, ccs) in mp.x_ports(x_q).items():
                fabric.send(fabric.port(side, col), pay, ccs)
            expect += mp.expected(x_q.shape[0])
        t0 = time.perf_counter()
        res = await fabric.run(expect, idle_limit=100_000)
        self.sim_s += time.perf_counter() - t0
        per_row, last_cycle = {}, {}
        for r in range(self.shape.rows):
            for side in ("E", "W"):
                pay, ccs, t = fabric.receive(fabric.port(side, r))
                per_row[side, r] = (pay, ccs)
                if len(t):
                    last_cycle[r] = max(last_cycle.get(r, 0), int(t[-1]))
        names = " + ".join(op.name for op, _x in pairs)
        if not res.ok:
            raise FabricHang(f"{names}: the mesh stopped before returning its results "
                             f"({STATUS[res.status]} after {res.cycles} cycles, seed "
                             f"{self.seed})")
        # The run's cycles are shared by its matmuls in proportion to their MACs (so a kind's
        # utilization is that of the run it was part of).
        macs = [op.shape[0] * op.shape[1] * x_q.shape[0] for op, x_q in pairs]
        ys = []
        for (op, x_q), mp, mac in zip(pairs, maps, macs, strict=True):
            y = mp.decode_edge(per_row, x_q.shape[0])
            want = self.golden.matmul(op, x_q)
            diff = first_difference(y, want)
            if diff is not None:
                raise MatmulMismatch({
                    "matmul": op.name, "kind": op.kind, "layer": op.layer,
                    "phase": self.phase, "token": len(self.token_cycles), **diff,
                    "cycle": last_cycle.get(mp.row_of(diff["index"])), "seed": self.seed})
            st = self.stats[self.phase][op.kind]
            st.cycles += res.cycles * mac / sum(macs)
            st.macs += mac
            st.calls += 1
            self.matmuls += 1
            ys.append(y)
        self._cur += res.cycles
        return ys

    def matmul(self, op: MatmulOp, x_q: np.ndarray) -> np.ndarray:
        """Blocking entry point for the model (runs in cocotb's bridge thread)."""
        from cocotb.task import resume
        return resume(self.amatmul)(op, x_q)

    def matmul_many(self, pairs: list[tuple[MatmulOp, np.ndarray]]) -> list[np.ndarray]:
        """Blocking entry point for independent matmuls (q, k, v; gate, up)."""
        from cocotb.task import resume
        return resume(self.amatmul_many)(pairs)

    # ---- reporting -------------------------------------------------------------------------
    def utilization(self) -> dict:
        lanes = 4 * self.shape.pes
        out = {}
        tot_c = tot_m = 0
        kinds: dict[str, _Stat] = defaultdict(_Stat)
        for phase in self.stats.values():
            for kind, st in phase.items():
                kinds[kind].cycles += st.cycles
                kinds[kind].macs += st.macs
                tot_c += st.cycles
                tot_m += st.macs
        for kind, st in sorted(kinds.items()):
            out[kind] = st.macs / (lanes * st.cycles) if st.cycles else 0.0
        out["overall"] = tot_m / (lanes * tot_c) if tot_c else 0.0
        return out

    def decode_bounds(self) -> dict:
        """Per-token decode cycles: the MAC bound and the analytic cycle model."""
        s = self.shape
        ideal = sum(int(np.ceil(op.shape[0] * op.shape[1] / (4 * s.pes))) for op in self.ops)
        if self.layout == "strips":
            # A job per run the backend makes (a group at once where :meth:`_concurrent`
            # lets it, as amatmul_many decides, else one matmul after another).
            group_of = {id(op): g for g in independent_groups(self.ops) for op in g}
            runs, done = [], set()
            for op in self.ops:
                g = group_of.get(id(op))
                if g is not None and self._concurrent([(o, None) for o in g]):
                    if id(g) not in done:
                        done.add(id(g))
                        runs.append(g)
                else:
                    runs.append([op])
            model = sum(strips_cycles(s, [(*o.shape, o.out == "int32", self.strips.get(id(o)))
                                          for o in run]) for run in runs)
        else:
            model = sum(layout_cycles(s, *op.shape, out_int32=op.out == "int32",
                                      layout="chain") for op in self.ops)
        return {"mac_bound_cycles": ideal, "model_cycles": model}


@dataclass
class LlmResult(BenchResult):
    """A generation with every matmul on the RTL.

    ``match_golden``: every one of the ``matmuls`` results equalled the golden backend's (a
    difference raises :class:`MatmulMismatch` instead), so ``tokens`` are the golden model's.
    Cycle figures are the harness's cycle counter between a token's first matmul and its
    last; ``decode_mac_bound_cycles`` and ``decode_model_cycles`` are the MAC bound and the
    compiler's cycle model of one decode token; ``mac_utilization`` by matmul kind and
    ``overall``. The ``*_wall_s`` figures split the job's wall time.
    """

    prompt: str
    tokens: list[int]
    text: str
    match_golden: bool
    cancelled: bool
    mesh: str
    sram_kb: int
    weights_mode: str
    layout: str
    sram_words_per_pe: int
    sampling: dict
    matmuls: int
    prefill_tokens: int
    prefill_cycles: int
    decode_cycles_per_token: float | None
    decode_cycles: list[int]
    decode_mac_bound_cycles: int
    decode_model_cycles: float
    config_cycles: int
    mac_utilization: dict
    sim_cycles: int
    load_and_quantize_wall_s: float
    preload_wall_s: float
    sim_wall_s: float
    generate_wall_s: float
    python_wall_s: float
    sim_cycles_per_s: float
    end_to_end_cycles_per_s: float
    job_wall_s: float
    recorded: dict | None
    # Filled by the CLI's ``--compare-plain``: the plain C++ harness's replay of ``recorded``.
    plain_harness: dict | None = None
    speed_ratio_vs_plain: float | None = None


@bench(LlmResult)
async def llm_run(fabric: Fabric, prompt: str, max_tokens: int = 16, model: str | None = None,
                  temperature: float = 0.8, top_k: int | None = 40, top_p: float | None = None,
                  seed: int = 1, weights: str = "auto", layout: str = "strips",
                  progress: str | None = None,
                  wave_tokens: list[int] | None = None, corrupt: str | None = None,
                  record: str | None = None, cancel: str | None = None) -> LlmResult:
    """Generate ``max_tokens`` tokens with every matmul on the RTL; compare with the golden run.

    ``cancel`` names a file the caller creates to stop the generation after the current token
    (``sparktile serve`` when its client disconnects); the result then says ``cancelled`` and
    compares the tokens made so far with the golden run's first ones.
    """
    from cocotb.task import bridge

    from ...golden_model import load_model

    t_start = time.perf_counter()
    lm = load_model(model)
    ops = lm.matmul_ops()   # quantizes (calibration on the host) once
    load_s = time.perf_counter() - t_start
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}

    rec = Recording(fabric, record)
    backend = RtlBackend(fabric, ops, weights, seed, corrupt=corrupt, layout=layout)
    await backend.preload()
    lm.set_backend(backend)
    log = open(progress, "a") if progress else None  # noqa: SIM115 - closed below
    tokens: list[int] = []
    wall0 = time.perf_counter()
    cycle0 = fabric.cycle
    sim0 = backend.sim_s

    def on_token(tok):
        backend.next_token()
        tokens.append(tok)
        if cancel and os.path.exists(cancel):
            raise _Cancelled()
        i = len(tokens)
        if wave_tokens:
            fabric.waves(wave_tokens[0] <= i + 1 <= wave_tokens[1])
        if log:
            cyc = backend.token_cycles[-1]
            sim_s = backend.sim_s - sim0
            log.write(json.dumps({
                "i": i, "n": max_tokens, "token": int(tok),
                "text": lm.tokenizer.decode([tok]) if lm.tokenizer else "",
                "cycles": cyc, "phase": "prefill" if i == 1 else "decode",
                "mac_utilization": backend.utilization()["overall"],
                "sim_cycles_per_s": (fabric.cycle - cycle0) / sim_s if sim_s else 0.0,
            }) + "\n")
            log.flush()

    if wave_tokens:
        fabric.waves(wave_tokens[0] <= 0)
    cancelled = False
    try:
        gen = await bridge(lambda: lm.generate(prompt, max_tokens, mode="int8",
                                               on_token=on_token, **sampling))()
        token_ids, text, prompt_ids = list(gen.token_ids), gen.text, gen.prompt_ids
    except _Cancelled:
        cancelled = True
        token_ids = [int(t) for t in tokens]
        text = lm.tokenizer.decode(token_ids) if lm.tokenizer else ""
        prompt_ids = lm.tokenizer.prompt_ids(prompt) if lm.tokenizer else list(prompt)
    finally:
        if log:
            log.close()
        fabric.waves(False)
    wall = time.perf_counter() - wall0
    recorded = rec.finish()
    sim_s = backend.sim_s - sim0
    decode = backend.token_cycles[1:]
    total_cycles = fabric.cycle - cycle0
    util = backend.utilization()
    bounds = backend.decode_bounds()
    return LlmResult(
        prompt=prompt, tokens=[int(t) for t in token_ids], text=text,
        # Every one of the `matmuls` results was compared with the golden backend's and was
        # equal (a difference raises MatmulMismatch): the tokens are the golden model's. A run
        # cancelled before its first matmul verified nothing.
        match_golden=backend.matmuls > 0,
        cancelled=cancelled,
        mesh=str(fabric.shape), sram_kb=fabric.shape.sram_kb,
        weights_mode=backend.mode, layout=layout, sram_words_per_pe=backend.words,
        sampling=sampling, matmuls=backend.matmuls,
        prefill_tokens=len(prompt_ids),
        prefill_cycles=backend.token_cycles[0] if backend.token_cycles else 0,
        decode_cycles_per_token=float(np.mean(decode)) if decode else None,
        decode_cycles=decode,
        decode_mac_bound_cycles=bounds["mac_bound_cycles"],
        decode_model_cycles=bounds["model_cycles"],
        config_cycles=backend.config_cycles,
        mac_utilization=util,
        sim_cycles=total_cycles,
        load_and_quantize_wall_s=load_s,
        preload_wall_s=sim0,
        sim_wall_s=sim_s,
        generate_wall_s=wall,
        python_wall_s=wall - sim_s,
        sim_cycles_per_s=total_cycles / sim_s if sim_s else 0.0,
        end_to_end_cycles_per_s=total_cycles / wall if wall else 0.0,
        job_wall_s=time.perf_counter() - t_start,
        recorded=recorded,
    )
