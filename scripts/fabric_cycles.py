"""Cycles of one token of the on-fabric decoder against the context the mesh is compiled for,
by op, from the mesh of ISSs (``sparktile.compiler.mesh_iss``), as a markdown table and, with
``--plot FILE``, a PNG (needs the ``plot`` extra: matplotlib).

The attention instructions run over every KV slot a worker holds, so a token's cycles depend
on the context the mapping is compiled for (``ceil(context / workers)`` slots), not on its
position. The mesh ISS's cycle model is within 1 % of the RTL counter on the meshes it was
checked on (``tests/test_mesh_iss_timing.py``; 39,311 against 39,343 on the 8x8 at context
512); the RTL's own count
for one of these contexts comes from ``sparktile run --on-fabric all --context N``.

Run: ``python -m sparktile.scripts.fabric_cycles [--mesh 8x8] [--sram-kb 64]
[--contexts 32,256,max] [--plot cycles.png]``.
"""

from __future__ import annotations

import click

OPS = ("matmul", "norm", "rope", "kv_append", "attention_scores", "softmax", "weighted_sum",
       "residual", "silu", "argmax", "embedding", "data_movement")


def measure(model, shape, contexts):
    """``[{context, slots, cycles, by_op}]`` for each context (``"max"``: the largest)."""
    from sparktile.compiler.decoder_mapping import compile_decoder
    from sparktile.compiler.mesh_iss import decode_on_iss
    rows = []
    for ctx in contexts:
        mapping = compile_decoder(model, shape, None if ctx == "max" else int(ctx))
        res = decode_on_iss(mapping, model, [1], 1)
        if res["first_diff"] is not None:
            raise click.ClickException(f"context {ctx}: the fabric differs from the golden "
                                       f"model: {res['first_diff']}")
        rows.append({"context": mapping.max_context, "slots": mapping.slots,
                     "cycles": res["token_cycles"][0], "by_op": res["by_op"][0]})
    return rows


@click.command()
@click.option("--mesh", default="8x8", show_default=True)
@click.option("--sram-kb", type=int, default=64, show_default=True)
@click.option("--contexts", default="32,256,max", show_default=True,
              help="Comma-separated contexts; 'max' is the largest the mesh holds.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None)
def main(mesh, sram_kb, contexts, plot):
    from sparktile.errors import UserError
    try:
        _main(mesh, sram_kb, contexts, plot)
    except (UserError, ValueError) as exc:   # a bad mesh, SRAM size (MeshShape's
        # ValueError), context or path; no matplotlib
        raise click.ClickException(str(exc)) from None


def _main(mesh, sram_kb, contexts, plot):
    from sparktile.cosim.benches.decode import decode_model
    from sparktile.hdl.mesh import MeshShape, parse_mesh

    from sparktile.report import check_output
    if plot:        # the path first: its error does not depend on what is installed
        from sparktile.scripts.perf.plots import check_plotting
        plot = check_output(plot, "--plot")
        check_plotting()
    m = parse_mesh(mesh)
    shape = MeshShape(m.rows, m.cols, pe="core", sram_kb=sram_kb)
    rows = measure(decode_model(), shape, [c.strip() for c in contexts.split(",")])
    used = [op for op in OPS if any(r["by_op"].get(op) for r in rows)]
    print("| context | slots/worker | cycles/token | " + " | ".join(used) + " |")
    print("|---|---|---|" + "---|" * len(used))
    for r in rows:
        print(f"| {r['context']} | {r['slots']} | {r['cycles']:,} | " +
              " | ".join(f"{r['by_op'].get(op, 0):,}" for op in used) + " |")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8.5, 4))
        bottom = [0] * len(rows)
        xs = [str(r["context"]) for r in rows]
        for op in used:
            vals = [r["by_op"].get(op, 0) for r in rows]
            ax.bar(xs, vals, bottom=bottom, label=op)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xlabel("context the mesh is compiled for (positions)")
        ax.set_ylabel("cycles per token (mesh ISS)")
        ax.set_title(f"sparktile-code-tiny on the {shape} core mesh, {sram_kb} KiB/PE")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()
