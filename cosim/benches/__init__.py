"""Benches: what runs inside the simulator, each shaped driver -> monitor -> model -> scoreboard.

``gemv`` (a matrix on the mesh against :func:`~sparktile.golden_model.arith.gemv_golden`),
``stress`` (random multicast traffic against the routes; ``latency``, ``throughput``,
``bad_config``), ``llm`` (the whole model generating with every matmul on the RTL, each one
compared with the golden backend) and ``calibration`` (GEMV sweeps for the performance
model's fit). Each is registered with its result dataclass
(:func:`~sparktile.cosim.sim.registry.bench`) and run from the host by object:
``run_job(shape, gemv, {"m": 64, "n": 128})``.
"""
