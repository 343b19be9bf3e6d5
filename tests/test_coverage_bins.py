"""Functional coverage bins of the stress bench (pure Python)."""

from collections import Counter

from sparktile.cosim.benches import coverage_bins as cb
from sparktile.cosim.benches.stress import Flow, xy_routes
from sparktile.cosim.sim.harness import edge_ports
from sparktile.hdl.mesh import MeshShape


def test_bins_of_a_known_multicast():
    shape = MeshShape(2, 2)
    ports = {(p.side, p.pos): p for p in edge_ports(shape)}
    f = Flow(0, ports["W", 0], [ports["E", 0], ports["S", 0]], ids=[1, 2, 3])
    hops = cb.hop_bins(shape, [f], lambda fl: xy_routes(shape, fl.src, fl.dsts))
    # Tile (0,0): W in, E and S out (fan-out 2); tile (0,1): W>E; tile (1,0): N>S.
    assert hops == Counter({"hop:W>E:fanout=2": 3, "hop:W>S:fanout=2": 3,
                            "hop:W>E:fanout=1": 3, "hop:N>S:fanout=1": 3})
    pauses = {p.index: (0.0, 0.0) for p in edge_ports(shape)}
    pauses[ports["W", 0].index] = (0.5, 0.0)
    pauses[ports["S", 0].index] = (0.0, 0.1)
    assert cb.stall_bins([f], pauses) == Counter({"stall:src=high,dst=none": 3,
                                                  "stall:src=high,dst=low": 3})


def test_missing_and_table():
    assert len(cb.missing({})) == len(cb.ALL_BINS) == 57
    full = dict.fromkeys(cb.ALL_BINS, 1)
    assert cb.missing(full) == []
    assert "bins hit: 57 of 57 (100.0 %)" in cb.table(full)
    assert cb.merge_bins({"a": 1}, {"a": 2, "b": 1}) == Counter({"a": 3, "b": 1})
