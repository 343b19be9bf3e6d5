"""Instructions, cycles and SRAM words of each decoder kernel at the shipped model's per-PE
sizes, from the ISS's counters (``sparktile.compiler.kernels.shipped_table``), as the markdown
table of ``docs/architecture.md``. Run: ``python -m sparktile.scripts.kernel_cycles``.

The RTL core equals the ISS cycle for cycle on every kernel (``tests/test_kernels.py``), and
the programs have no branches and read their inputs from SRAM, so these counts do not depend
on the data.
"""

from sparktile.hdl import isa

from sparktile.compiler import kernels


def main():
    print("| op | elements | instructions | cycles | cycles / element | element-wise passes "
          "| SRAM words |")
    print("|---|---|---|---|---|---|---|")
    for row in kernels.shipped_table():
        k = row["kernel"]
        passes = sum(i.n for i in k.program if i.op in isa.VEC_OPS) / k.elements
        print(f"| {row['op']} | {row['size']} | {row['instructions']} | {row['cycles']:,} | "
              f"{row['cycles'] / k.elements:.1f} | {passes:.1f} | {row['words']:,} |")


if __name__ == "__main__":
    main()
