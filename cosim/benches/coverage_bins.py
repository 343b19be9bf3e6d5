"""Functional coverage of the stress bench: which hops, fan-outs and stall patterns ran.

Bins (own bins rather than cocotb-coverage: the events are computed from the routes and the
scoreboard after a run, not sampled from signals in the simulator, so a decorator-based
sampler has nothing to hook into):

* ``hop:<in>><out>:fanout=<1|2|3+>``: a router passed a wavelet from input side ``in`` to
  output side ``out`` while sending it to that many outputs (multicast). Counted once per
  delivered wavelet per hop of its route's tree; the scoreboard has checked that every
  wavelet arrived exactly once at every destination, so every hop of the tree happened.
* ``stall:src=<none|low|high>,dst=<none|low|high>``: a flow's source edge paused and its
  destination edge dropped ``ready`` with these probabilities (none < 0.05 <= low < 0.3 <=
  high), counted per delivered wavelet.

The bins inside the tiles (FIFO occupancy at each transfer, the PE's task kind x descriptor
flags x back-pressure) are RTL coverage points (:mod:`sparktile.hdl.cover`), counted by a
coverage build; :func:`write_functional_report` merges both kinds into one report.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from ...hdl.formats import Port

__all__ = ["ALL_BINS", "hop_bins", "stall_bins", "missing", "hit_count", "percent_hit",
           "merge_bins", "table", "write_functional_report"]

_SIDES = ("N", "E", "S", "W")
_FANOUT = ("1", "2", "3+")
_STALL = ("none", "low", "high")

#: Every bin the stress bench can hit: every input and output side (an output on the side a
#: wavelet came in on is an edge tile sending back to its own edge), every stall pair.
ALL_BINS = frozenset(
    [f"hop:{i}>{o}:fanout={f}" for i in _SIDES for o in _SIDES for f in _FANOUT]
    + [f"stall:src={s},dst={d}" for s in _STALL for d in _STALL])


def _fanout(n: int) -> str:
    return "3+" if n >= 3 else str(n)


def _stall(p: float) -> str:
    return "none" if p < 0.05 else "low" if p < 0.3 else "high"


def hop_bins(shape, flows, routes_of) -> Counter:
    """Hop bins of ``flows`` (each with its delivered ``ids``); ``routes_of(flow)`` gives
    the flow's tree as ``{tile: (input, outputs)}``."""
    bins: Counter = Counter()
    for f in flows:
        for _tile, (inp, outs) in routes_of(f).items():
            for out in outs:
                if Port(out) == Port.RAMP or Port(inp) == Port.RAMP:
                    continue
                bins[f"hop:{Port(inp).name}>{Port(out).name}:fanout={_fanout(len(outs))}"] += \
                    len(f.ids)
    return bins


def stall_bins(flows, pauses: dict[int, tuple[float, float]]) -> Counter:
    """Stall bins: ``pauses[port] = (source idle, sink stall)`` of each edge port."""
    bins: Counter = Counter()
    for f in flows:
        for d in f.dsts:
            bins[f"stall:src={_stall(pauses[f.src.index][0])},"
                 f"dst={_stall(pauses[d.index][1])}"] += len(f.ids)
    return bins


def merge_bins(*runs) -> Counter:
    total: Counter = Counter()
    for run in runs:
        total.update(run)
    return total


def missing(bins) -> list[str]:
    """Bins of :data:`ALL_BINS` never hit, sorted."""
    return sorted(b for b in ALL_BINS if not bins.get(b))


def hit_count(bins) -> int:
    """Bins of :data:`ALL_BINS` hit at least once."""
    return len(ALL_BINS) - len(missing(bins))


def percent_hit(bins) -> float:
    return 100.0 * hit_count(bins) / len(ALL_BINS)


def table(bins) -> str:
    """A readable table: hop bins by (input > output) row and fan-out column, then stalls."""
    lines = [f"{'hop':<8}" + "".join(f"{'fanout ' + f:>12}" for f in _FANOUT)]
    for i in _SIDES:
        for o in _SIDES:
            lines.append(f"{i}>{o:<6}" + "".join(
                f"{bins.get(f'hop:{i}>{o}:fanout={f}', 0):>12}" for f in _FANOUT))
    corner = "src/dst"
    lines.append(f"{corner:<8}" + "".join(f"{s:>12}" for s in _STALL))
    for s in _STALL:
        lines.append(f"{s:<8}" + "".join(f"{bins.get(f'stall:src={s},dst={d}', 0):>12}"
                                         for d in _STALL))
    lines.append(f"bins hit: {hit_count(bins)} of {len(ALL_BINS)} ({percent_hit(bins):.1f} %)")
    return "\n".join(lines)


def write_functional_report(path: str | os.PathLike, bins, runs: list[str]) -> Path:
    """The merged functional coverage of a regression: the stress bench's bins (``hop:``,
    ``stall:``) and the RTL's (``router:``, ``pe:``, from
    :func:`sparktile.cosim.sim.coverage.rtl_bins`), as a Markdown table per group with the
    bins never hit, and beside it ``<report>.json`` (counts of every bin, the never-hit list,
    the runs merged)."""
    from ...hdl.cover import ALL_RTL_BINS

    path = Path(path)
    every = sorted(ALL_BINS | ALL_RTL_BINS)
    groups: dict[str, list[str]] = {}
    for b in every:
        groups.setdefault(b.split(":", 1)[0], []).append(b)
    never = [b for b in every if not bins.get(b)]
    lines = [f"# Functional coverage ({len(runs)} runs merged)", "",
             (f"{len(every) - len(never)} of {len(every)} bins hit "
              f"({100.0 * (len(every) - len(never)) / len(every):.1f} %)."), ""]
    for group, names in groups.items():
        hit = sum(1 for b in names if bins.get(b))
        lines += [f"## {group}: {hit} of {len(names)} bins", "", "| bin | count |", "|---|---|",
                  *(f"| {b.split(':', 1)[1]} | {bins.get(b, 0)} |" for b in names), ""]
    lines += [f"## Never hit ({len(never)})", "", *(f"- {b}" for b in never), "",
              "Runs: " + ", ".join(runs), ""]
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps(
        {"runs": runs, "bins": {b: bins.get(b, 0) for b in every}, "never_hit": never,
         "hit": len(every) - len(never), "total": len(every)}, indent=1))
    return path
