"""The whole decoder on the fabric: token in, next token out, every op on the RTL cores.

Driver: the configuration stream (west edges) of :func:`~sparktile.compiler.decoder_mapping.
compile_decoder`, then per token one activation wavelet (the token id and the position) into
the hub's north edge (``N0``). Monitor: the hub's west edge (``W0``): per token the greedy next
token (one wavelet), or, when the host samples, the logits (``vocab`` wavelets). Model: the
golden model's integer path (:mod:`sparktile.golden_model.intpath`), one token at a time with
its own int8 KV cache. Scoreboard: every position's next token (and logits) equal; the first
difference names the position, the element, both values, the cycle and the seed.

Prompt tokens are fed one per activation (a prefill of ``T`` tokens is ``T`` decode steps:
each position's keys and values are appended on the fabric as it goes); the next token of the
last prompt position starts the generation, and each generated token is fed back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from ...compiler.decoder_mapping import HostSampler, compile_decoder, score_position
from ...golden_model.arith import argmax_int, pack_int8
from ...hdl.formats import Counter
from ..sim.fabric import PROGRESS_S, STATUS, Fabric, Recording
from ..sim.registry import BenchResult, bench

__all__ = ["DecodeResult", "decode_run", "decode_model", "load_mapping"]


@dataclass
class DecodeResult(BenchResult):
    """A generation with the whole decoder on the RTL mesh (see the module docstring).

    ``tokens``: the next token the fabric returned at every position (prompt positions
    included), ``golden``: the integer golden model's; ``match_golden`` when all are equal.
    ``token_cycles``: cycles from the activation entering the mesh to the token leaving it,
    per position (the harness's cycle counter). ``max_context``: positions the mesh's KV
    cache holds (``slots`` per worker); ``kv_words_per_slot``: SRAM words of one position on
    its worker; ``sram_words``: the fullest PE's words and the hub's. ``sampling``: the
    temperature, top-k, top-p and seed (temperature 0: the fabric's greedy argmax; else the
    fabric sends the logits and the host samples); ``stopped``: ``max_tokens`` or ``eos``.
    """

    mesh: str
    model: str
    prompt_ids: list
    tokens: list
    golden: list
    match_golden: bool
    first_diff: dict | None
    status: str
    token_cycles: list
    decode_cycles_per_token: float | None
    max_context: int
    slots: int
    kv_words_per_slot: int
    sram_words: dict
    sampling: dict
    stopped: str
    on_fabric: list
    on_host: list
    config_cycles: int
    task_errors: int
    sim_cycles: int
    sim_wall_s: float
    sim_cycles_per_s: float
    seed: int
    # With ``record``: the workload's cycles, wall and CPU time here (``Recording.finish``).
    recorded: dict | None = None
    # Filled by the CLI's ``--compare-plain``: the plain C++ harness's replay of ``recorded``.
    plain_harness: dict | None = None
    speed_ratio_vs_plain: float | None = None


def decode_model(model: str | None = None, random: dict | None = None):
    """The model a decode job runs: a checkpoint (``model``: path or name, default the shipped
    one), or a seeded random one (``random``: ``{"seed": s, **config fields}``, for tests)."""
    if random is not None:
        from ...golden_model.testing import random_model, tiny_config
        fields = {k: v for k, v in random.items() if k != "seed"}
        lm = random_model(tiny_config(**fields), seed=int(random.get("seed", 0)))
    else:
        from ...golden_model import load_model
        lm = load_model(model)
    lm.set_act_scales("static")
    return lm


@bench(DecodeResult)
async def decode_run(fabric: Fabric, prompt: str | None = None, ids: list | None = None,
                     max_tokens: int = 4, model: str | None = None, random: dict | None = None,
                     context: int | None = None, seed: int = 1,
                     fault: str | dict | None = None, check: str = "tokens",
                     progress: str | None = None, temperature: float = 0.0,
                     top_k: int | None = None, top_p: float | None = None,
                     stop_at_eos: bool = True, record: str | None = None,
                     mapping_file: str | None = None,
                     progress_s: float = PROGRESS_S) -> DecodeResult:
    """Feed the prompt (``prompt`` text, or token ``ids``) and generate ``max_tokens`` with
    every op on the RTL, comparing each position's token with the golden int path.

    Greedy (``temperature=0``): the fabric returns the argmax token. Sampling (``temperature >
    0``, with ``top_k`` / ``top_p``, drawn with ``seed``): the fabric returns the logits, each
    compared element by element with the golden model's, and the host draws the token as
    ``generate(mode="int", seed=seed)`` does (:class:`~sparktile.compiler.decoder_mapping.
    HostSampler`). A generated end-of-sequence token stops the generation (``stop_at_eos``).

    ``fault="argmax_index"`` (for the test that proves the scoreboard can fail): the argmax
    index table of the worker holding the golden model's first answer is loaded with one bit
    flipped in that entry, so the RTL returns another token at position 0 and the report must
    name it.
    ``fault={"kv": [layer, position, word, bit]}``: after that position ran, bit ``bit`` of
    word ``word`` of its key row in ``layer`` is flipped in the worker's SRAM (written
    through the configuration path between two tokens, as a corrupted SRAM cell would read).

    ``progress`` names a file to which a JSON line is appended per position (``i``, ``n``,
    ``token``, ``golden``, ``cycles``, ``phase``, ``sim_cycles_per_s``), and, while the mesh
    is configured, one about every ``progress_s`` seconds (``phase`` ``configure``, ``taken``
    of ``wavelets``, ``cycles``, ``sim_cycles_per_s``; :meth:`~sparktile.cosim.sim.fabric.
    Fabric.configure`).

    ``mapping_file``: a pickle of the :class:`~sparktile.compiler.decoder_mapping.
    DecoderMapping` the caller already compiled for this model and mesh (the CLI does, to
    check the context before the run), used instead of compiling again; it must be for this
    mesh, model size, check and sampling, and hold the context, or the job stops naming what
    differs.

    ``record`` names a file to which the whole workload (configuration, every token's
    wavelets, the counter reads) is written for the plain C++ harness to replay
    (``run --compare-plain``); the result's ``recorded`` gives its cycles and the wall and CPU
    time it took here, Python included.

    ``check="every-op"``: the hub also sends every intermediate vector it holds (the norms,
    q/k/v before and after RoPE, the attention sums and outputs, the o and down outputs, the
    residual stream, the SiLU product, the logits) out of its west edge, and each is
    compared with the golden model's; the first difference names the layer, the op, the
    position, the element and the cycle its word left the mesh.
    """
    shape = fabric.shape
    lm = decode_model(model, random)
    if ids is None:
        ids = lm.tokenizer.prompt_ids(prompt or "") if lm.tokenizer else []
    ids = [int(t) for t in ids]
    if not ids:
        raise ValueError("the prompt has no tokens")
    if check not in ("tokens", "every-op"):
        raise ValueError(f"check must be 'tokens' or 'every-op', not {check!r}")
    sampler = HostSampler(temperature, top_k, top_p, seed) if temperature else None
    taps, logits = check == "every-op", sampler is not None
    if mapping_file:
        mapping = load_mapping(mapping_file, lm, shape, context, taps=taps, logits=logits)
    else:
        mapping = compile_decoder(lm, shape, context, taps=taps, logits=logits)
    eos = set(lm.config.eos_token_ids) if stop_at_eos else set()
    if stop_at_eos and lm.tokenizer is not None:
        eos |= set(lm.tokenizer.eos_ids)
    total = len(ids) + max_tokens - 1
    if total > mapping.max_context:
        raise ValueError(f"{len(ids)} prompt tokens and {max_tokens} new ones need "
                         f"{total} positions; the mesh holds {mapping.max_context}")
    if fault is not None and fault != "argmax_index" and not (
            isinstance(fault, dict) and set(fault) == {"kv"}):
        raise ValueError(f"fault must be 'argmax_index', {{'kv': [layer, position, word, "
                         f"bit]}} or None, not {fault!r}")
    if fault == "argmax_index":
        probe = lm.new_cache(2, mode="int")
        first = argmax_int(lm.forward([ids[0]], probe, mode="int")[0])
        vocab = lm.config.vocab_size
        for tile, lay in mapping.layout.items():      # the worker holding that logit's row
            lo, hi, _n = lay.get("rows", {}).get((-1, "head"), (0, 0, 0))
            if lo <= first < hi:
                idx = lay["argmax_idx"]
                mapping.program.write_sram(*tile, idx.base + first - lo, [(vocab - first) ^ 1])
    rec = Recording(fabric, record)
    def config_progress(p):
        with open(progress, "a") as log:
            log.write(json.dumps(p) + "\n")

    cfg_cycles = await fabric.configure(mapping.program, progress_s=progress_s,
                                        progress=config_progress if progress else None)
    before = await fabric.read_counters((Counter.TASK_ERRORS,))
    cache = lm.new_cache(total + 1, mode="int")
    port_in, port_out = fabric.port("N", 0), fabric.port("W", 0)
    tokens, golden, cycles = [], [], []
    first_diff, status, stopped = None, "complete", "max_tokens"
    feed = list(ids)
    sim_s, cyc0 = 0.0, fabric.cycle
    # A token's cycles are bounded by the hub's serial ops and the trees; a hang is declared
    # after many times that without an edge transfer.
    idle = 2_000_000
    for pos in range(total):
        tok = feed[pos]
        pay, ccs = mapping.token_stream(tok, pos)
        fabric.send(port_in, pay, ccs)
        t0 = time.perf_counter()
        res = await fabric.run(mapping.out_words + mapping.tap_words, idle_limit=idle,
                               max_cycles=50_000_000)
        sim_s += time.perf_counter() - t0
        words, ccs_out, when = fabric.receive(port_out)
        got, want, first_diff = score_position(mapping, lm, cache, tok, pos, ccs_out, words,
                                               when, sampler, prompt=pos + 1 < len(ids))
        golden.append(want)
        if not res.ok or got is None:
            status = STATUS[res.status] if not res.ok else "not one token at W0"
            first_diff = {"position": pos, "op": "next_token", "got": None, "expected": want,
                          "cycle": fabric.cycle, "seed": seed}
            break
        tokens.append(got)
        cycles.append(res.cycles)
        if progress:
            with open(progress, "a") as log:
                log.write(json.dumps({
                    "i": pos + 1, "n": total, "token": got, "golden": want,
                    "cycles": res.cycles, "phase": "prompt" if pos + 1 < len(ids) else "new",
                    "sim_cycles_per_s": (fabric.cycle - cyc0) / sim_s if sim_s else 0.0}) + "\n")
        if first_diff is not None:
            first_diff["seed"] = seed
            break
        if isinstance(fault, dict) and pos == int(fault["kv"][1]):
            await _flip_kv(fabric, mapping, cache, *(int(v) for v in fault["kv"]))
        if pos + 1 >= len(ids) and got in eos:
            stopped = "eos"
            break
        if pos + 1 >= len(feed):
            feed.append(got)
    after = await fabric.read_counters((Counter.TASK_ERRORS,))
    errors = int(fabric.counter_delta(after, before)["task_errors"].sum())
    decode = cycles[len(ids):]
    sim_cycles = fabric.cycle - cyc0
    recorded = rec.finish()
    return DecodeResult(
        mesh=str(shape), model=lm.config.name, prompt_ids=ids, tokens=tokens, golden=golden,
        match_golden=first_diff is None and (len(tokens) == total or stopped == "eos"),
        first_diff=first_diff,
        status=status, token_cycles=cycles,
        decode_cycles_per_token=float(np.mean(decode)) if decode else None,
        max_context=mapping.max_context, slots=mapping.slots,
        kv_words_per_slot=mapping.kv_words_per_slot,
        sram_words={"max": mapping.words["max"], "hub": mapping.words["hub"],
                    "per_pe": mapping.words["per_pe"]},
        sampling={"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed},
        stopped=stopped,
        on_fabric=list(mapping.on_fabric), on_host=list(mapping.on_host),
        config_cycles=cfg_cycles, task_errors=errors, sim_cycles=sim_cycles,
        sim_wall_s=sim_s, sim_cycles_per_s=sim_cycles / sim_s if sim_s else 0.0, seed=seed,
        recorded=recorded)


def load_mapping(path: str, lm, shape, context: int | None, *, taps: bool, logits: bool):
    """The decoder mapping pickled at ``path`` (by the caller that compiled it, in this run),
    checked against what this job would compile.

    Raises
    ------
    ValueError
        When the file is unreadable or the mapping is for another mesh, model size, check,
        sampling mode or a smaller context, naming the field.
    """
    import pickle

    from ...compiler.decoder_mapping import DecoderMapping
    try:
        with open(path, "rb") as f:
            mapping = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ValueError(f"cannot read the compiled mapping {path}: {exc}") from None
    if not isinstance(mapping, DecoderMapping):
        raise ValueError(f"{path} holds a {type(mapping).__name__}, not a DecoderMapping")
    want = {"mesh": (shape.key(), mapping.shape.key()),
            "vocab": (lm.config.vocab_size, mapping.vocab),
            "hidden": (lm.config.hidden_size, mapping.hidden),
            "taps": (bool(taps), bool(mapping.taps)), "logits": (bool(logits), mapping.logits)}
    for name, (job, got) in want.items():
        if job != got:
            raise ValueError(f"the compiled mapping {path} has {name} {got!r}, this job "
                             f"needs {job!r}")
    if context is not None and mapping.max_context < context:
        raise ValueError(f"the compiled mapping {path} holds {mapping.max_context} positions, "
                         f"this job needs {context}")
    return mapping


async def _flip_kv(fabric: Fabric, mapping, cache, layer: int, position: int, word: int,
                   bit: int) -> None:
    """Flip ``bit`` of word ``word`` of ``position``'s key row in ``layer`` on its worker:
    the word's value is the golden cache's (equal to the fabric's, checked up to here)."""
    from ...compiler.program import ConfigProgram
    (r, c), addr = mapping.kv_word(layer, position, word)
    hd4 = cache.k.shape[-1] // 4
    g, j = divmod(word, hd4)
    value = int(pack_int8(cache.k[layer, g, position, 4 * j:4 * j + 4])[0])
    prog = ConfigProgram(fabric.shape)
    prog.write_sram(r, c, addr, [value ^ (1 << bit)])
    await fabric.configure(prog)
