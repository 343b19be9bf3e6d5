"""Route checking (sparktile/compiler/routes.py): the channel-dependency graph, its cycle check
against an independent one (Kahn's algorithm), route files with every field checked, the
flows a route set makes, and `sparktile stress --routes`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sparktile.hdl.formats import Port
from sparktile.hdl.mesh import MeshShape

from sparktile.cli import main
from sparktile.compiler.mapping import compile_gemv
from sparktile.compiler.program import ConfigProgram
from sparktile.compiler.routes import (
    RouteError,
    channel_dependencies,
    check_deadlock_free,
    find_cycle,
    load_routes,
    program_from_entries,
    trace_flows,
)

RING = [{"tile": [0, 0], "color": 1, "from": "S", "to": ["E"]},
        {"tile": [0, 1], "color": 1, "from": "W", "to": ["S"]},
        {"tile": [1, 1], "color": 1, "from": "N", "to": ["W"]},
        {"tile": [1, 0], "color": 1, "from": "E", "to": ["N"]}]

FORK = [{"tile": [0, 0], "color": 3, "from": "W", "to": ["E", "S"]},
        {"tile": [0, 1], "color": 3, "from": "W", "to": ["E"]},
        {"tile": [1, 0], "color": 3, "from": "N", "to": ["S"]},
        {"tile": [1, 1], "color": 5, "from": "S", "to": ["N", "W"]},
        {"tile": [0, 1], "color": 5, "from": "S", "to": ["N"]},
        {"tile": [1, 0], "color": 5, "from": "E", "to": ["W"]}]


def _acyclic(graph) -> bool:
    """Kahn's algorithm: the oracle for find_cycle."""
    nodes = set(graph) | {d for v in graph.values() for d in v}
    indeg = dict.fromkeys(nodes, 0)
    for v in graph.values():
        for d in v:
            indeg[d] += 1
    ready = [n for n, k in indeg.items() if k == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for d in graph.get(n, {}):
            indeg[d] -= 1
            if indeg[d] == 0:
                ready.append(d)
    return seen == len(nodes)


@st.composite
def route_sets(draw):
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shape = MeshShape(rows, cols)
    prog = ConfigProgram(shape)
    for _ in range(draw(st.integers(0, 12))):
        r, c = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
        color = draw(st.integers(0, 29))
        src = draw(st.sampled_from(list(Port)))
        dst = draw(st.sets(st.sampled_from(list(Port)), min_size=1, max_size=3))
        try:
            prog.add_route(r, c, color, src, dst)
        except ValueError:
            pass            # the same color from another input at that tile
    return prog


@settings(max_examples=300, deadline=None, derandomize=True)
@given(route_sets())
def test_find_cycle_agrees_with_kahn_and_its_cycles_are_real(prog):
    graph = channel_dependencies(prog)
    cycle = find_cycle(graph)
    assert (cycle is None) == _acyclic(graph)
    if cycle:
        ring = [ch for ch, _ in cycle]
        for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
            assert b in graph[a], (a, b)
        assert len(set(ring)) == len(ring)


@pytest.mark.parametrize("seed", range(40))
def test_the_stress_benchs_xy_routes_never_have_a_cycle(seed):
    from sparktile.cosim.benches.stress import program_flows, random_flows
    rng = np.random.default_rng(seed)
    shape = MeshShape(int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    check_deadlock_free(program_flows(shape, random_flows(shape, rng, max_fanout=6)))


@pytest.mark.parametrize("rows, cols, m, n", [(1, 1, 5, 8), (2, 3, 40, 70), (4, 4, 64, 200),
                                              (3, 1, 9, 30), (1, 5, 12, 90)])
def test_the_mapping_compilers_routes_never_have_a_cycle(rows, cols, m, n):
    rng = np.random.default_rng(rows * 10 + cols)
    w = rng.integers(-128, 128, (m, n), dtype=np.int8)
    mapping = compile_gemv(MeshShape(rows, cols), w, np.ones(m, np.int64),
                           np.zeros(m, np.int64))
    check_deadlock_free(mapping.program)


def test_a_ring_is_refused_naming_every_hop_of_the_cycle():
    prog = program_from_entries(MeshShape(2, 2), RING)
    with pytest.raises(RouteError) as e:
        check_deadlock_free(prog)
    msg = str(e.value)
    ring = ("(0,0).S --color 1--> (0,1).W --color 1--> (1,1).N --color 1--> (1,0).E "
            "--color 1--> (0,0).S")
    assert ring in msg, msg


def test_the_fixed_configuration_path_can_close_a_cycle_with_user_routes():
    # West to east is every tile's configuration and response path, whatever the route
    # table says: user routes that turn back west on the same row wait on it.
    prog = ConfigProgram(MeshShape(1, 3))
    prog.add_route(0, 2, 2, Port.W, [Port.W])
    prog.add_route(0, 1, 2, Port.E, [Port.W])
    prog.add_route(0, 0, 2, Port.E, [Port.E])
    cycle = find_cycle(channel_dependencies(prog))
    k = [str(ch) for ch, _ in cycle].index("(0,1).W")
    cycle = cycle[k:] + cycle[:k]                       # the same ring, from (0,1).W
    assert [str(ch) for ch, _ in cycle] == ["(0,1).W", "(0,2).W", "(0,1).E", "(0,0).E"]
    assert [label for _, label in cycle] == ["cfg/rsp", "color 2", "color 2", "color 2"]
    with pytest.raises(RouteError, match="cfg/rsp"):
        check_deadlock_free(prog)


def test_flows_of_a_route_set():
    flows = trace_flows(program_from_entries(MeshShape(2, 2), FORK))
    assert flows == [(3, ("W", 0), [("E", 0), ("S", 0)]),
                     (5, ("S", 1), [("N", 1), ("W", 1)])]


@pytest.mark.parametrize("entries, words", [
    ([{"tile": [0, 0], "color": 3, "from": "W", "to": ["E"]}],
     "from edge port W0 reaches tile \\(0,1\\) from W"),
    ([{"tile": [0, 0], "color": 3, "from": "W", "to": ["RAMP"]}], "sent to the PE"),
    ([{"tile": [0, 1], "color": 3, "from": "W", "to": ["E"]}], "never taken from the mesh"),
])
def test_a_route_set_that_would_drop_its_own_traffic_is_refused(entries, words):
    with pytest.raises(RouteError, match=words):
        trace_flows(program_from_entries(MeshShape(2, 2), entries))


@pytest.mark.parametrize("change, words", [
    ({"tile": [2, 0]}, "tile must be"), ({"tile": [0]}, "tile must be"),
    ({"tile": [0, True]}, "tile must be"), ({"color": 30}, "color must be an integer"),
    ({"color": "3"}, "color must be an integer"), ({"from": "X"}, "from must be one of"),
    ({"to": []}, "to must be a non-empty list"), ({"to": ["Q"]}, "to must be a non-empty"),
    ({"to": ["W"]}, "sent back out of the side"), ({"via": 1}, "unknown field"),
    ({"from": ["W"]}, "from must be one of"), ({"to": [["E"]]}, "to must be a non-empty"),
])
def test_every_field_of_a_route_entry_is_checked(change, words):
    entry = {**FORK[0], **change}
    with pytest.raises(RouteError, match=words):
        program_from_entries(MeshShape(2, 2), [entry])


def test_one_color_from_two_inputs_of_one_tile_is_refused():
    with pytest.raises(RouteError, match="entry 1: color 3 at tile"):
        program_from_entries(MeshShape(2, 2), [FORK[0], {**FORK[0], "from": "N", "to": ["S"]}])


@pytest.mark.parametrize("text, words", [
    ("not json", "not JSON"), ("[]", "'routes' list"), ('{"routes": []}', "non-empty list"),
    ('{"routes": [1]}', "must be an object"), ("\udcff", "cannot read"),
])
def test_a_bad_route_file_names_what_is_wrong(tmp_path, text, words):
    path = tmp_path / "r.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(RouteError, match=words):
        load_routes(path, MeshShape(2, 2))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_mutated_route_files_load_or_give_a_route_error(tmp_path_factory, data):
    entries = json.loads(json.dumps(FORK))
    i = data.draw(st.integers(0, len(entries) - 1))
    key = data.draw(st.sampled_from(["tile", "color", "from", "to", "extra"]))
    value = data.draw(st.one_of(st.none(), st.integers(-5, 40), st.text(max_size=3),
                                st.lists(st.integers(-2, 3), max_size=3),
                                st.lists(st.sampled_from(["N", "E", "S", "W", "RAMP", "x"]),
                                         max_size=3), st.booleans(), st.floats()))
    entries[i][key] = value
    path = tmp_path_factory.mktemp("routes") / "r.json"
    path.write_text(json.dumps({"routes": entries}))
    try:
        prog, _ = load_routes(path, MeshShape(2, 2))
    except RouteError:
        return
    # Whatever loads is checkable and traceable without any other exception.
    try:
        check_deadlock_free(prog)
        trace_flows(prog)
    except RouteError:
        pass


def test_stress_refuses_a_cyclic_route_file_before_any_simulation(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a simulation started")
    monkeypatch.setattr("sparktile.cosim.sim.session.run_job", boom)
    path = tmp_path / "ring.json"
    path.write_text(json.dumps({"routes": RING}))
    r = CliRunner().invoke(main, ["stress", "--mesh", "2x2", "--routes", str(path)])
    assert r.exit_code == 2, r.output
    assert "can deadlock" in r.output and "(1,0).E --color 1-->" in r.output
    assert "Traceback" not in r.output


def test_stress_runs_user_routes_on_the_rtl(run_bench):
    from sparktile.cosim.benches.stress import stress
    r = run_bench(2, 2, stress, {"wavelets": 1500, "seed": 4, "max_stall": 0.6,
                                 "routes": FORK})
    assert r.status == "complete", r
    assert (r.lost, r.duplicated, r.out_of_order) == (0, 0, 0), r.first_error
    assert r.flows == 2 and r.expected_deliveries == r.delivered > 0
