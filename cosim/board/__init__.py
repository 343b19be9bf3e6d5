"""The FPGA host side: the bridge protocol client (``host``: transports, ``Board``, the
``BoardBackend`` that runs the model's matmuls on a board), the virtual board (``virtual``:
the FPGA top Verilated with a bit-level UART, ``vboard.cpp``) and the bring-up demo
(``demo``). The RTL of the bridge is in :mod:`sparktile.hdl.fpga`; bitstreams are built by
:mod:`sparktile.scripts.fpga_build`.
"""
