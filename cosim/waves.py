"""Waveform dumps: how big one will be, a limit on how big it may get, and checking the file.

A VCD records every signal change of the whole mesh, so its size grows with the PEs times the
cycles dumped: a one-token ``run`` on a 2x2 mesh is ~80k cycles and ~470 MB. Before a dump
starts, :func:`announce` prints an estimate (cycles expected x PEs x
:data:`BYTES_PER_CYCLE_PER_PE`), and the BFM closes the dump once the file reaches
``--waves-limit`` (:meth:`sparktile.cosim.sim.fabric.Fabric.wave_limit`; Verilator ignores
``$dumpoff``). After the run :func:`check_written` verifies the file exists and is not empty
before the command says it wrote it, and prints what was measured, so the estimate can be
checked against the real figure each time.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..compiler.strips import layout_cycles, layout_words
from ..errors import UserError

__all__ = ["BYTES_PER_CYCLE_PER_PE", "DEFAULT_LIMIT_MB", "estimate_bytes", "gemv_job_cycles",
           "stress_job_cycles", "run_job_cycles", "announce", "check_written", "limit_option"]

#: VCD bytes per simulated cycle per PE while a GEMV computes. Measured (shared 2x2 build,
#: ``gemv --m 32 --n 64``): batch 64 wrote 56,160,923 bytes in 9,938 cycles, batch 4 wrote
#: 4,615,239 in 998; the difference is 51.5 MB over 8,940 cycles = 5,766 bytes/cycle, 1,441
#: per PE. Configuration phases change fewer signals, so this is an upper-side figure.
BYTES_PER_CYCLE_PER_PE = 1441

#: Default ``--waves-limit`` in MB (10^6 bytes): large enough for a GEMV or a few tokens on a
#: small mesh, small enough that a forgotten window does not fill a disk.
DEFAULT_LIMIT_MB = 256


def limit_option(f):
    """The ``--waves-limit MB`` option (0 = no limit)."""
    return click.option("--waves-limit", type=click.IntRange(0, 10**7), default=DEFAULT_LIMIT_MB,
                        show_default=True, metavar="MB",
                        help="Stop dumping waves once the file reaches this many MB (10^6 "
                             "bytes); 0 = no limit.")(f)


def estimate_bytes(shape, cycles: float) -> int:
    """Expected VCD size of ``cycles`` dumped cycles on a mesh of ``shape``."""
    return int(max(cycles, 0) * shape.pes * BYTES_PER_CYCLE_PER_PE)


def _config_cycles(shape, words_per_pe: int) -> float:
    # Each row's configuration stream carries every PE's words through the west edge, one
    # wavelet per cycle, plus a header per PE.
    return shape.cols * (words_per_pe + 4) + shape.rows + shape.cols


def gemv_job_cycles(shape, m: int, n: int, batch: int, out_int32: bool = False,
                    layout: str = "chain") -> float:
    """Cycles a ``gemv`` job simulates: configuration, the GEMV (cycle model of ``layout``),
    counter reads."""
    compute = layout_cycles(shape, m, n, batch, out_int32=out_int32, layout=layout)
    return _config_cycles(shape, layout_words(shape, m, n, layout)) + compute + \
        4 * shape.cols * 12


def stress_job_cycles(shape, wavelets: int, max_stall: float) -> float:
    """Rough cycles of a ``stress`` job: the wavelets spread over the edge sources, slowed by
    the mean stall probability (``max_stall / 2``), each delivered to about two sinks."""
    sources = 2 * (shape.rows + shape.cols)
    return 2 * wavelets / sources / (1 - max_stall / 2) + _config_cycles(shape, 8)


def run_job_cycles(shape, ops, mode: str, prompt_tokens: int, first: int, last: int,
                   layout: str = "strips") -> float:
    """Cycles of tokens ``first..last`` of a ``run`` (token 1 is the prefill of
    ``prompt_tokens`` vectors; 0 means the stationary preload before it), ``layout`` as the
    run places its matrices (each alone: an estimate from above where some run together)."""
    def matmuls(batch: int) -> float:
        total = 0.0
        for op in ops:
            total += layout_cycles(shape, *op.shape, batch, out_int32=op.out == "int32",
                                   layout=layout)
            if mode == "streaming":
                total += _config_cycles(shape, layout_words(shape, *op.shape, layout))
        return total

    cycles = 0.0
    if first <= 0 and mode == "stationary":
        cycles += _config_cycles(shape, sum(layout_words(shape, *op.shape, layout)
                                            for op in ops))
    if first <= 1 <= last:
        cycles += matmuls(max(prompt_tokens, 1))
    decode = last - max(first, 2) + 1
    if decode > 0:
        cycles += decode * matmuls(1)
    return cycles


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def announce(path: Path, shape, cycles: float, limit_mb: int) -> None:
    """Print, before the run, the dump's expected size and what the limit will do."""
    est = estimate_bytes(shape, cycles)
    line = (f"waves: dumping to {path}; expected about {_mb(est)} ({cycles:,.0f} cycles x "
            f"{shape.pes} PEs x ~{BYTES_PER_CYCLE_PER_PE} bytes/cycle/PE)")
    if limit_mb and est > limit_mb * 1e6:
        stop = limit_mb * 1e6 / (shape.pes * BYTES_PER_CYCLE_PER_PE)
        line += (f"; more than --waves-limit {limit_mb} MB, so the dump stops after about "
                 f"{stop:,.0f} cycles (raise --waves-limit, 0 for none, or dump a shorter "
                 f"window)")
    elif not limit_mb:
        line += "; no limit (--waves-limit 0)"
    click.echo(line, err=True)


def check_written(path: Path, stopped: dict | None, shape, limit_mb: int,
                  cycles: int | None = None) -> str:
    """The line to print about the dump, once the file is known to exist and to be non-empty;
    ``stopped`` is the job's ``waves_stopped`` (where the size limit closed the dump); with
    ``cycles`` (the cycles dumped, when known) it gives the measured bytes/cycle/PE.

    Raises
    ------
    UserError
        When the simulator wrote no file (or an empty one) at ``path``.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size <= 0:
        raise UserError(f"no waveform was written to {str(path)!r} "
                        f"({'the file is empty' if size == 0 else 'no such file'}); the run "
                        f"itself finished, its report is above")
    per = ""
    if cycles:
        per = f", {size / (cycles * shape.pes):,.0f} bytes/cycle/PE"
    if stopped:
        return (f"{path} ({_mb(size)}; stopped at cycle {stopped['cycle']:,} on reaching "
                f"--waves-limit {limit_mb} MB; VCD, open with surfer or gtkwave)")
    return f"{path} ({_mb(size)}{per}; VCD, open with surfer or gtkwave)"
