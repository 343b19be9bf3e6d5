"""sparktile: a hardware-in-the-loop co-simulation kit for a wafer-scale code-LLM accelerator.

Sub-packages (each mapped from a top-level folder of the repository):

* :mod:`sparktile.hdl` — Amaranth description of the PE tile, router and mesh fabric.
* :mod:`sparktile.cosim` — Verilator builds, cocotb benches and the hardware-in-the-loop driver.
* :mod:`sparktile.golden_model` — numpy reference of a code LLM and of the PE arithmetic.
* :mod:`sparktile.scripts` — extrapolation to a wafer, FPGA builds, sweeps.
"""

__version__ = "0.1.0"
