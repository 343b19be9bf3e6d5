"""The mapping compiler: pure Python between the hardware formats and the simulator.

* :mod:`.mapping` -- a matrix onto a region of the mesh: padded weight blocks, descriptors,
  requantization words, routes, and the activation streams (``compile_gemv``);
* :mod:`.program` -- the configuration program those become: SRAM bursts, route and register
  writes as configuration wavelets per row, and the READ requests for the counters;
* :mod:`.cycle_model` -- the analytic GEMV cycle model the benches check the RTL against and
  the wafer extrapolation uses.

Nothing here needs a simulator: it depends only on :mod:`sparktile.hdl.formats`,
:mod:`sparktile.hdl.mesh` and the golden arithmetic.
"""
