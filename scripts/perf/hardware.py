"""Hardware descriptions for the wafer-scale extrapolation, every constant with its source.

A :class:`Hardware` is a set of named fields (:data:`FIELDS`), each holding a value and a
source string. Presets:

* ``tile`` — the RTL as configured, read from the design's own parameters
  (:mod:`sparktile.hdl.mesh`, :mod:`sparktile.hdl.formats`, :mod:`sparktile.golden_model.arith`);
* ``wse2``, ``wse3`` — Cerebras WSE-2 / WSE-3 from the sourced figures of
  ``shared/wafer_facts.md`` (tags: [V] vendor, [P] paper, [3P] third party, [D] derived here,
  [A] an assumption made here, with its reason).

Every field can be overridden from a TOML file (a ``[hardware]`` table, or top-level keys) or
from the command line (``--set clock_hz=8.5e8``); an overridden field's source says so.
Energies are given at 45 nm (Horowitz, ISSCC 2014) and scaled by ``energy_node_scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sparktile.errors import UserError

__all__ = ["FIELDS", "PRESETS", "Hardware", "HardwareError", "load_hardware", "parse_set"]


class HardwareError(UserError, ValueError):
    """An unknown preset or field, or a value of the wrong kind; the message says what is
    allowed."""


#: name -> (type, unit, meaning). The model reads nothing else from a hardware description.
FIELDS: dict[str, tuple[type, str, str]] = {
    "name": (str, "", "preset name"),
    "cores": (int, "PEs", "PEs on the die (vendor count)"),
    "grid_rows": (int, "PEs", "rows of the PE grid a program can use"),
    "grid_cols": (int, "PEs", "columns of the PE grid a program can use"),
    "sram_bytes_per_pe": (int, "B", "SRAM per PE"),
    "sram_reserve_bytes_per_pe": (int, "B", "SRAM per PE kept for code, descriptors, buffers"),
    "sram_read_bytes_per_cycle": (float, "B/cycle", "SRAM read bandwidth per PE"),
    "acc_depth": (int, "rows", "accumulator rows per pass (more rows re-stream x)"),
    "clock_hz": (float, "Hz", "PE and fabric clock"),
    "lanes_int8": (int, "MAC/cycle", "int8 multiply-accumulates per PE per cycle (0: none)"),
    "lanes_fp16": (int, "MAC/cycle", "fp16 multiply-accumulates per PE per cycle (0: none)"),
    "link_bits": (int, "bit", "payload bits per wavelet, one wavelet per link per cycle"),
    "hop_cycles": (float, "cycle", "cycles per router hop"),
    "pe_area_um2": (float, "um^2", "PE area (sets the hop length for link energy)"),
    "e_mac_int8_pj": (float, "pJ", "int8 MAC energy at 45 nm"),
    "e_mac_fp16_pj": (float, "pJ", "fp16 MAC energy at 45 nm"),
    "e_sram_pj_per_byte": (float, "pJ/B", "SRAM read energy at 45 nm"),
    "e_link_fj_per_bit_mm": (float, "fJ/bit/mm", "on-chip link energy at 45 nm"),
    "energy_node_scale": (float, "", "factor from 45 nm energies to this node"),
    "e_offwafer_pj_per_bit": (float, "pJ/bit", "energy per bit leaving the wafer"),
    "pe_peak_power_w": (float, "W", "peak power of one PE (vendor)"),
    "system_power_w": (float, "W", "wall power of one system (0: not known)"),
    "wafer_link_bytes_per_s": (float, "B/s", "bandwidth between wafers (per wafer)"),
    "wafer_link_latency_s": (float, "s", "latency of one wafer-to-wafer crossing"),
}

#: field -> (low, low bound open?, high]: plausible physical ranges (a 1 MHz..10 GHz clock, a
#: grid of at most 10^5 x 10^5 PEs, energies non-negative and below 10^4 pJ, ...). A value
#: outside is a typo or a unit slip, and the figures it gives would be nonsense.
RANGES: dict[str, tuple[float, bool, float]] = {
    "cores": (1, False, 1e10),
    "grid_rows": (1, False, 1e5),
    "grid_cols": (1, False, 1e5),
    "sram_bytes_per_pe": (1, False, 1e9),
    "sram_reserve_bytes_per_pe": (0, False, 1e9),
    "sram_read_bytes_per_cycle": (0, True, 1e6),
    "acc_depth": (1, False, 1e8),
    "clock_hz": (1e6, True, 1e10),
    "lanes_int8": (0, False, 1e5),
    "lanes_fp16": (0, False, 1e5),
    "link_bits": (1, False, 4096),
    "hop_cycles": (0, False, 1e3),
    "pe_area_um2": (0, True, 1e9),
    "e_mac_int8_pj": (0, False, 1e4),
    "e_mac_fp16_pj": (0, False, 1e4),
    "e_sram_pj_per_byte": (0, False, 1e4),
    "e_link_fj_per_bit_mm": (0, False, 1e6),
    "energy_node_scale": (0, True, 1e3),
    "e_offwafer_pj_per_bit": (0, False, 1e6),
    "pe_peak_power_w": (0, False, 1e4),
    "system_power_w": (0, False, 1e9),
    "wafer_link_bytes_per_s": (0, True, 1e15),
    "wafer_link_latency_s": (0, False, 1e3),
}


_FACTS = "shared/wafer_facts.md"
_HOROWITZ = f"Horowitz ISSCC 2014, 45 nm [P] ({_FACTS})"


def _common_energy() -> dict[str, tuple[object, str]]:
    return {
        "e_mac_int8_pj": (0.3, f"int8 mult 0.2 pJ + 32b add 0.1 pJ (accumulate), {_HOROWITZ}"),
        "e_mac_fp16_pj": (1.5, f"FP16 mult 1.1 pJ + FP16 add 0.4 pJ, {_HOROWITZ}"),
        "e_sram_pj_per_byte": (1.25, f"8 KB SRAM 64-bit read 10 pJ / 8 B, {_HOROWITZ}"),
        "e_link_fj_per_bit_mm": (40.4, f"low-swing mesh links, 45 nm, DATE 2013 [P] ({_FACTS})"),
        "e_offwafer_pj_per_bit": (
            10.0, ("[A] no published figure for Cerebras' off-wafer links; 10 pJ/bit taken as "
                  "a long-reach SerDes order of magnitude; off-wafer traffic is a few KB per "
                  "token, so this term is small whatever the value")),
        "wafer_link_latency_s": (
            2e-6, ("[A] not published; 2 us per wafer-to-wafer crossing (Ethernet through a "
                  "switch); a pipeline term per crossing, override to see its weight")),
    }


def _wafer(name: str) -> dict[str, tuple[object, str]]:
    """WSE-2 / WSE-3 presets (see shared/wafer_facts.md for every tag)."""
    wse3 = name == "wse3"
    # WSE-3's grid is not published: WSE-2's SDK-exposed grid (750 x 994 of 850k cores),
    # scaled by sqrt(900k / 850k) on each side, keeping WSE-2's aspect and usable fraction.
    k = math.sqrt(900_000 / 850_000)
    p = {
        "name": (name, "preset"),
        "cores": ((900_000, "WSE-3 900,000 cores [V], Tom's Hardware / Argonne SC24")
                  if wse3 else (850_000, "WSE-2 850,000 cores [V], AnandTech")),
        "grid_rows": ((round(750 * k), ("[D] WSE-3 grid not published: WSE-2's 750 rows x "
                                       "sqrt(900k/850k)"))
                      if wse3 else (750, ("WSE-2 SDK grid 750 x 994 [V], csl-examples "
                                         "single-tile-matvec"))),
        "grid_cols": ((round(994 * k), ("[D] WSE-3 grid not published: WSE-2's 994 columns x "
                                       "sqrt(900k/850k)"))
                      if wse3 else (994, "WSE-2 SDK grid 750 x 994 [V], csl-examples")),
        "sram_bytes_per_pe": (48 * 1024, ("48 KB per PE [V], Argonne CS-2/CS-3 overviews; taken "
                                         "as KiB (x 900k = 44.2 GB, the vendor's 44 GB)")),
        "sram_reserve_bytes_per_pe": (
            4096, ("[A] 4 KiB per PE for program code, descriptors, activation and partial-sum "
                  "buffers (Cerebras PEs hold their code in the same SRAM); not published")),
        "sram_read_bytes_per_cycle": (
            16.0, ("[D] 16 B read of the 24 B/cycle (2 x 64-bit reads + 1 x 64-bit write) that "
                  "reproduces the vendor's 20-21 PB/s (850k x 1.1 GHz x 24 B = 22 PB/s); the SDK "
                  "appendix's two 32-bit reads per cycle would give 8 B (override to test)")),
        "acc_depth": (1 << 20, ("[A] partial sums live in SRAM on the WSE: no pass limit (the "
                               "SRAM fit still counts them)")),
        "clock_hz": (1.1e9, (
            "[A] WSE-3 clock not published; WSE-2's 1.1 GHz (Hot Chips 34 [V]) taken. The SDK "
            "examples' 850 MHz [V] would scale every time by 1.29" if wse3 else
            "1.1 GHz, Hot Chips 34 [V] (Cerebras blog), the silicon's clock; the SDK examples' "
            "850 MHz [V] is a simulator/example setting, not taken; every time scales with it")),
        "lanes_fp16": ((8, ("8 FP16 SIMD lanes [3P], nextplatform 2024-03-14 ('boosts SIMD "
                           "width' [V])")) if wse3 else
                       (4, "4 FP16 SIMD lanes [3P], nextplatform 2024-03-14")),
        "lanes_int8": ((8 if wse3 else 4),
                       ("[A] no published int8 MAC rate: taken equal to the FP16 lanes (int8 "
                       "weights run on the FP16 datapath; they halve SRAM and fabric bytes, not "
                       "MAC cycles)")),
        "link_bits": (32, "32-bit wavelets, one per link per cycle [V], SDK 'A Conceptual View'"),
        "hop_cycles": (1.0, "one cycle per hop [V]: vendor code and WaferLLM"),
        "pe_area_um2": (38_000.0, ("~38,000 um^2 per PE [V], Hot Chips 34 / IEEE Micro (WSE-2; "
                                  "taken for WSE-3 too)")),
        "energy_node_scale": ((0.25 if wse3 else 0.3), (
            "[A] 45 nm -> {} energy factor, not sourced: C*V^2 scaling of logic alone gives "
            "~0.1-0.15 (gate capacitance x (0.75 V/0.9 V)^2), wires and SRAM bit lines scale "
            "far less; taken as the middle. Treat energies as +-2x").format(
                "5 nm" if wse3 else "N7")),
        "pe_peak_power_w": (0.030, ("30 mW peak per PE [V], Hot Chips 34 (WSE-2; taken for "
                                   "WSE-3)")),
        "system_power_w": ((23_000.0, "CS-3 about 23 kW [3P] Tom's Hardware, 'same as CS-2' [V]")
                           if wse3 else (20_000.0, "CS-2 > 20 kW [V], AnandTech (lower bound)")),
        "wafer_link_bytes_per_s": (1.2e12 / 8, ("1.2 Tb/s host I/O (12 x 100 GbE) [V], Argonne "
                                               "SC24; assumed to be the wafer-to-wafer path")),
    }
    p.update(_common_energy())
    return p


def _tile() -> dict[str, tuple[object, str]]:
    """The RTL as configured: values read from the design's own parameters."""
    from ...golden_model.arith import LANES
    from ...hdl.formats import MAX_MESH_DIM, PAYLOAD_BITS
    from ...hdl.mesh import MeshShape

    shape = MeshShape(MAX_MESH_DIM, MAX_MESH_DIM)  # defaults of the RTL's generator
    p = {
        "name": ("tile", "preset"),
        "cores": (shape.pes, ("hdl.formats.MAX_MESH_DIM squared (5-bit column in config "
                             "headers): the largest mesh the RTL generates")),
        "grid_rows": (shape.rows, "hdl.formats.MAX_MESH_DIM"),
        "grid_cols": (shape.cols, "hdl.formats.MAX_MESH_DIM"),
        "sram_bytes_per_pe": (shape.sram_words * 4, (f"hdl.mesh.MeshShape default sram_kb="
                                                    f"{shape.sram_kb} (32-bit words)")),
        "sram_reserve_bytes_per_pe": (0, ("the RTL's PEs hold no code (tasks are hardware); "
                                         "descriptors and requantization words are counted by "
                                         "compiler.mapping.gemv_words")),
        "sram_read_bytes_per_cycle": (4.0, "hdl.pe: one 32-bit SRAM read port"),
        "acc_depth": (shape.acc_depth, "hdl.mesh.MeshShape default acc_depth"),
        "clock_hz": (1.1e9, ("[A] the RTL has no clock target; WSE-2's 1.1 GHz (Hot Chips 34 "
                            "[V]) taken so tile and wafer figures compare")),
        "lanes_int8": (LANES, "golden_model.arith.LANES: 4 int8 MACs per cycle (hdl.pe)"),
        "lanes_fp16": (0, "hdl.pe has no FP16 datapath"),
        "link_bits": (PAYLOAD_BITS, "hdl.formats.PAYLOAD_BITS"),
        "hop_cycles": (1.0, ("measured: 1 cycle per hop (tests/test_fabric_rtl.py "
                            "test_latency_is_one_cycle_per_hop)")),
        "pe_area_um2": (38_000.0, ("[A] no layout; the WSE-2 PE's ~38,000 um^2 [V] taken for "
                                  "the hop length")),
        "energy_node_scale": (1.0, "[A] no target node: 45 nm energies used unscaled"),
        "pe_peak_power_w": (0.0, "not known (no layout)"),
        "system_power_w": (0.0, "not known (no system)"),
        "wafer_link_bytes_per_s": (1.2e12 / 8, "[A] as wse2/wse3: 1.2 Tb/s [V]"),
    }
    p.update(_common_energy())
    return p


PRESETS = {"tile": _tile, "wse2": lambda: _wafer("wse2"), "wse3": lambda: _wafer("wse3")}


@dataclass
class Hardware:
    """Values and sources of every field of :data:`FIELDS`; read fields as attributes."""

    values: dict[str, object]
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def lanes(self, dtype: str) -> int:
        return self.values[f"lanes_{dtype}"]

    @property
    def pes(self) -> int:
        return self.grid_rows * self.grid_cols

    @property
    def sram_usable_per_pe(self) -> int:
        return self.sram_bytes_per_pe - self.sram_reserve_bytes_per_pe

    @property
    def hop_mm(self) -> float:
        """Distance between neighbouring PEs: the side of a square PE."""
        return math.sqrt(self.pe_area_um2) / 1000.0

    def override(self, updates: dict, origin: str) -> None:
        for key, raw in updates.items():
            if key not in FIELDS:
                raise HardwareError(f"unknown hardware field {key!r} (from {origin}); allowed: "
                                    f"{', '.join(FIELDS)}")
            kind = FIELDS[key][0]
            self.values[key] = _coerce(key, kind, raw, origin)
            self.sources[key] = f"overridden ({origin})"
        self.check()

    def check(self) -> None:
        """Every numeric field finite and inside :data:`RANGES` (physically plausible)."""
        v = self.values
        for key, (lo, lo_open, hi) in RANGES.items():
            val = v[key]
            ok = isinstance(val, (int, float)) and math.isfinite(val) and val <= hi and (
                val > lo if lo_open else val >= lo)
            if not ok:
                left = "(" if lo_open else "["
                raise HardwareError(f"hardware field {key} = {val!r} is out of range; allowed: "
                                    f"{left}{lo:g}, {hi:g}] {FIELDS[key][1]}".rstrip())
        if not v["sram_reserve_bytes_per_pe"] < v["sram_bytes_per_pe"]:
            raise HardwareError(f"sram_reserve_bytes_per_pe must be in [0, sram_bytes_per_pe="
                                f"{v['sram_bytes_per_pe']}), not {v['sram_reserve_bytes_per_pe']}")

    def as_dict(self) -> dict:
        return {k: {"value": self.values[k], "unit": FIELDS[k][1], "source": self.sources[k]}
                for k in FIELDS}


def _coerce(key: str, kind: type, raw, origin: str):
    try:
        if kind is str:
            return str(raw)
        if isinstance(raw, bool):
            raise ValueError
        if kind is int:
            val = float(raw) if isinstance(raw, str) else raw
            # inf and nan are not integers (int() of them raises OverflowError/ValueError).
            if not math.isfinite(float(val)) or float(val) != int(float(val)):
                raise ValueError
            return int(float(val))
        # + 0.0 turns -0.0 into 0.0: a zero energy or latency must not print as "-0.00"
        # (found by the long fuzz run: e_link_fj_per_bit_mm=-0.0).
        return float(raw) + 0.0
    except (TypeError, ValueError, OverflowError):
        what = "an integer" if kind is int else "a number"
        raise HardwareError(f"hardware field {key} must be {what}, not {raw!r} "
                            f"(from {origin})") from None


def parse_set(items) -> dict:
    """``["clock_hz=8.5e8", ...]`` -> ``{"clock_hz": "8.5e8"}``."""
    out = {}
    for item in items or ():
        key, sep, val = str(item).partition("=")
        if not sep or not key.strip():
            raise HardwareError(f"--set takes FIELD=VALUE (e.g. clock_hz=8.5e8), not {item!r}")
        out[key.strip()] = val.strip()
    return out


def _read_toml(path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise HardwareError("reading a TOML file needs Python >= 3.11 or the 'tomli' "
                                "package") from None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise HardwareError(f"cannot read hardware file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise HardwareError(f"hardware file {str(path)!r} is not valid TOML: {exc}") from None
    table = data.get("hardware", data)
    if not isinstance(table, dict):
        raise HardwareError(f"hardware file {str(path)!r}: [hardware] must be a table")
    return table


def load_hardware(preset: str = "wse3", *, toml_path=None, sets=None) -> Hardware:
    """A preset, then a TOML file's fields (it may name its own ``preset``), then ``--set``."""
    table = _read_toml(toml_path) if toml_path else {}
    preset = table.pop("preset", preset) if table else preset
    if preset not in PRESETS:
        raise HardwareError(f"unknown wafer preset {preset!r}; allowed: {', '.join(PRESETS)}")
    raw = PRESETS[preset]()
    hw = Hardware({k: v for k, (v, _s) in raw.items()}, {k: s for k, (_v, s) in raw.items()})
    missing = set(FIELDS) - set(hw.values)
    if missing:  # pragma: no cover - a preset bug
        raise HardwareError(f"preset {preset} lacks {sorted(missing)}")
    if table:
        hw.override(table, f"file {toml_path}")
    if sets:
        hw.override(parse_set(sets), "--set")
    hw.check()
    return hw
