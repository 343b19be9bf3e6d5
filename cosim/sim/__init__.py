"""The simulator driver: everything that builds, starts and talks to a Verilated mesh.

``build_cache`` (one content-hashed, locked, stamped cache for every Verilated thing),
``build_progress`` (the compile with a units-done line), ``build`` (the cocotb mesh and the
plain C++ harness), ``harness`` (the edge ports and their SystemVerilog wrapper, with
``bfm.cpp``'s DPI queues), ``fabric`` (the bench's view of a running mesh), ``registry`` (the
bench protocol: benches by object, results as dataclasses), ``session`` (running a bench in
the simulator from the host) and ``job`` (the one cocotb test, inside the simulator). Nothing
here knows what a bench checks.
"""
