"""The wafer-scale performance model: from measured tile cycles to a whole wafer.

One idea per module, in dependency order: ``hardware`` (wafer and tile presets, overrides),
``models`` (model configurations by name or path), ``calibration`` (fitting the GEMV timing to
measured runs; the shipped and the user's calibration files), ``placement`` (matrices onto PEs
and wafers), ``energy`` (joules per token), ``estimate`` (cycles per token, TTFT, tokens/s),
``claims`` (published figures checked against the estimate) and ``plots``.
"""
