"""Route checking before any simulation: the channel-dependency graph, and where flows go.

A router's input FIFOs are shared by every color, so the fabric deadlocks exactly when full
FIFOs wait on each other in a ring. The *channel-dependency graph* has one node per input
FIFO (a :class:`Channel`: tile and input port) and an edge from a FIFO to every FIFO its
routed colors are forwarded into (one hop on; the ramp into the PE and the edges of the mesh
are sinks). The fixed paths count too: configuration wavelets go west to east and read
responses from the west and the ramp go east, at every tile. :func:`check_deadlock_free`
rejects a route set whose graph has a cycle, naming it hop by hop with the color of each
dependency. Dimension-ordered routes (the mapping compiler's and the stress bench's, along
the row first) never have one: ``tests/test_routes.py`` checks that on random flows.

:func:`load_routes` reads a user's route file (JSON, below), checking every field;
:func:`trace_flows` follows each color from the mesh edge where it is injected to the edges
it reaches, refusing a route that would drop its own wavelets (a hop into a tile with no entry
for the color from that side). ``sparktile stress --routes FILE`` uses all three.

Route file::

    {"routes": [
        {"tile": [0, 0], "color": 3, "from": "W", "to": ["E", "S"]},
        {"tile": [0, 1], "color": 3, "from": "W", "to": ["E"]}
    ]}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..hdl.formats import ROUTABLE_COLORS, Port
from ..hdl.mesh import MeshShape
from .program import ConfigProgram

__all__ = ["STEP", "OPPOSITE", "Channel", "RouteError", "channel_dependencies", "find_cycle",
           "check_deadlock_free", "load_routes", "trace_flows", "program_from_entries"]

#: (row, col) step of a hop out of each mesh side, and the side it enters the next tile by.
STEP = {Port.E: (0, 1), Port.W: (0, -1), Port.N: (-1, 0), Port.S: (1, 0)}
OPPOSITE = {Port.E: Port.W, Port.W: Port.E, Port.N: Port.S, Port.S: Port.N}
_NAMES = {p.name: p for p in Port}
_FIXED = "cfg/rsp"     # the label of the fixed configuration and response paths


class RouteError(UserError, ValueError):
    """A route set that can deadlock, drops its own wavelets, or is malformed."""


@dataclass(frozen=True, order=True)
class Channel:
    """The input FIFO of tile ``(row, col)`` on input ``port``."""

    row: int
    col: int
    port: Port

    def __str__(self) -> str:
        return f"({self.row},{self.col}).{Port(self.port).name}"


def _neighbour(shape: MeshShape, r: int, c: int, out: Port):
    """The channel that output ``out`` of tile ``(r, c)`` feeds, or None (an edge or the PE)."""
    if out == Port.RAMP:
        return None
    dr, dc = STEP[out]
    nr, nc = r + dr, c + dc
    if not (0 <= nr < shape.rows and 0 <= nc < shape.cols):
        return None
    return Channel(nr, nc, OPPOSITE[out])


def channel_dependencies(program: ConfigProgram) -> dict[Channel, dict[Channel, str]]:
    """``{channel: {channel it can wait on: label}}`` for the routes of ``program`` plus the
    fixed configuration/response paths; the label is the color (or ``cfg/rsp``)."""
    shape = program.shape
    graph: dict[Channel, dict[Channel, str]] = {}

    def add(src: Channel, dst: Channel | None, label: str) -> None:
        if dst is not None:
            graph.setdefault(src, {}).setdefault(dst, label)

    for r in range(shape.rows):
        for c in range(shape.cols):
            east = _neighbour(shape, r, c, Port.E)
            add(Channel(r, c, Port.W), east, _FIXED)
            add(Channel(r, c, Port.RAMP), east, _FIXED)
    for (r, c), entries in program.routes.items():
        for color, route in entries.items():
            for out in route.dst:
                add(Channel(r, c, route.src), _neighbour(shape, r, c, out), f"color {color}")
    return graph


def find_cycle(graph: dict[Channel, dict[Channel, str]]) -> list[tuple[Channel, str]] | None:
    """One cycle of ``graph`` as ``[(channel, label of the edge leaving it), ...]``, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    state: dict[Channel, int] = {}
    for root in sorted(graph):
        if state.get(root, WHITE) != WHITE:
            continue
        stack = [(root, iter(sorted(graph.get(root, {}).items())))]
        path = [root]
        state[root] = GREY
        while stack:
            node, children = stack[-1]
            for child, _label in children:
                s = state.get(child, WHITE)
                if s == GREY:
                    ring = path[path.index(child):]
                    return [(a, graph[a][b]) for a, b in zip(ring, ring[1:] + [child],
                                                             strict=True)]
                if s == WHITE:
                    state[child] = GREY
                    stack.append((child, iter(sorted(graph.get(child, {}).items()))))
                    path.append(child)
                    break
            else:
                state[node] = BLACK
                stack.pop()
                path.pop()
    return None


def check_deadlock_free(program: ConfigProgram) -> None:
    """Raise :class:`RouteError` naming a cycle of the channel-dependency graph, if any."""
    cycle = find_cycle(channel_dependencies(program))
    if cycle:
        hops = " ".join(f"{ch} --{label}-->" for ch, label in cycle) + f" {cycle[0][0]}"
        raise RouteError(f"the routes can deadlock: their channel-dependency graph has the "
                         f"cycle {hops} (each FIFO can wait for the next one while full; "
                         f"route along the row first, then the column)")


def program_from_entries(shape: MeshShape, entries, where: str = "routes") -> ConfigProgram:
    """A :class:`ConfigProgram` from route entries (``{"tile", "color", "from", "to"}``),
    every field checked; errors name the entry and the field."""
    if not isinstance(entries, list) or not entries:
        raise RouteError(f"{where}: 'routes' must be a non-empty list of entries")
    program = ConfigProgram(shape)
    for i, e in enumerate(entries):
        at = f"{where}: entry {i}"
        if not isinstance(e, dict):
            raise RouteError(f"{at} must be an object with tile, color, from, to")
        unknown = sorted(set(e) - {"tile", "color", "from", "to"})
        if unknown:
            raise RouteError(f"{at}: unknown field(s) {', '.join(unknown)} (allowed: tile, "
                             f"color, from, to)")
        tile = e.get("tile")
        if (not isinstance(tile, list) or len(tile) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in tile)
                or not (0 <= tile[0] < shape.rows and 0 <= tile[1] < shape.cols)):
            raise RouteError(f"{at}: tile must be [row, col] inside the {shape} mesh "
                             f"(rows 0..{shape.rows - 1}, cols 0..{shape.cols - 1}), not "
                             f"{tile!r}")
        color = e.get("color")
        if not isinstance(color, int) or isinstance(color, bool) or \
                not 0 <= color < ROUTABLE_COLORS:
            raise RouteError(f"{at}: color must be an integer in [0, {ROUTABLE_COLORS - 1}], "
                             f"not {color!r}")
        src = e.get("from")
        if not isinstance(src, str) or src not in _NAMES:
            raise RouteError(f"{at}: from must be one of {', '.join(_NAMES)}, not {src!r}")
        dst = e.get("to")
        if not isinstance(dst, list) or not dst or \
                any(not isinstance(d, str) or d not in _NAMES for d in dst):
            raise RouteError(f"{at}: to must be a non-empty list of {', '.join(_NAMES)}, "
                             f"not {dst!r}")
        if src in dst and src != "RAMP":
            raise RouteError(f"{at}: a wavelet cannot be sent back out of the side it came "
                             f"in on ({src})")
        try:
            program.add_route(tile[0], tile[1], color, _NAMES[src], [_NAMES[d] for d in dst])
        except ValueError as exc:
            raise RouteError(f"{at}: {exc}") from None
    return program


def load_routes(path: str | os.PathLike, shape: MeshShape) -> tuple[ConfigProgram, list]:
    """Read a route file (see the module docstring): ``(program, entries)``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise RouteError(f"cannot read the route file {str(path)!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RouteError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or "routes" not in data:
        raise RouteError(f"{path}: must be an object with a 'routes' list")
    entries = data["routes"]
    return program_from_entries(shape, entries, str(path)), entries


def trace_flows(program: ConfigProgram) -> list[tuple[int, tuple[str, int], list[tuple[str, int]]]]:
    """Each color's flows: ``(color, source edge, destination edges)``, edges as
    ``(side, position)``; a color enters where a tile accepts it from the mesh's edge.

    Raises
    ------
    RouteError
        When a color is forwarded into a tile that has no entry for it from that side (its
        wavelets would be dropped there), when it reaches the PE ramp (the stress bench
        sends and receives at the edges only), or when no entry takes a color from an edge.
    """
    shape = program.shape
    flows = []
    for color in sorted({k for entries in program.routes.values() for k in entries}):
        sources = []
        for (r, c), entries in sorted(program.routes.items()):
            route = entries.get(color)
            if route is None or route.src == Port.RAMP:
                continue
            if _neighbour(shape, r, c, route.src) is None:      # the side faces the edge
                sources.append((r, c, route.src))
        if not sources:
            raise RouteError(f"color {color} is never taken from the mesh's edge: no tile "
                             f"accepts it from an edge-facing side, so no traffic can enter")
        for r, c, side in sources:
            dsts, seen, todo = [], set(), [(r, c, side)]
            while todo:
                tr, tc, inp = todo.pop()
                if (tr, tc, inp) in seen:
                    continue
                seen.add((tr, tc, inp))
                route = program.routes.get((tr, tc), {}).get(color)
                if route is None or route.src != inp:
                    src_side, src_pos = _edge(shape, r, c, side)
                    raise RouteError(f"color {color} from edge port {src_side}{src_pos} "
                                     f"reaches tile ({tr},{tc}) from {Port(inp).name}, where "
                                     f"no route takes it from that side: it would be dropped")
                for out in sorted(route.dst):
                    if out == Port.RAMP:
                        raise RouteError(f"color {color} is sent to the PE of tile "
                                         f"({tr},{tc}); stress traffic must leave at an edge")
                    nxt = _neighbour(shape, tr, tc, out)
                    if nxt is None:
                        dsts.append(_edge(shape, tr, tc, out))
                    else:
                        todo.append((nxt.row, nxt.col, nxt.port))
            flows.append((color, _edge(shape, r, c, side), sorted(set(dsts))))
    return flows


def _edge(shape: MeshShape, r: int, c: int, side: Port) -> tuple[str, int]:
    """The edge port ``(side, position)`` beside tile ``(r, c)`` on ``side``."""
    name = Port(side).name
    return (name, c) if name in ("N", "S") else (name, r)
