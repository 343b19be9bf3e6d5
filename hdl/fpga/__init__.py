"""FPGA bring-up: a UART, the framed host bridge, and the board top around a mesh.

``protocol`` is pure Python (frame layout, commands, CRC) shared by the gateware and the host
driver :mod:`sparktile.cosim.board.host`; ``uart``, ``bridge`` and ``top`` are Amaranth components;
``boards`` lists the supported boards and their platforms (from ``amaranth-boards``).
"""
