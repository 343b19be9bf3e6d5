"""What ccache saves when several mesh configurations are built cold, measured
(``python -m sparktile.scripts.bench_ccache``).

A test run, a sweep or a user trying meshes builds one simulator per configuration, and each
compiles the same Verilator runtime (and, for meshes of one tile module, often the same tile
C++). For each of ``off`` and ``on`` (``SPARKTILE_CCACHE``) this builds the configurations in
order, in an empty cache of its own (ccache's cache empty too), in a child process, and prints
each build's wall seconds, the total, the CPU seconds of every process, and the ratio of the
two modes. Nothing is compared with a constant.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from .bench_mesh_scaling import run_child

__all__ = ["parse_config", "measure", "main"]

#: The configurations a cold ``make test`` builds most often (GEMV meshes and meshes of cores).
DEFAULT_CONFIGS = "1x1,2x2,2x3,2x2/core,2x3/core,3x1/core/16"

_CHILD = """
import json, sys, time
from sparktile.cosim.sim.build import build_mesh
from sparktile.scripts.bench_ccache import parse_config
out = []
for text in sys.argv[1:]:
    t0 = time.monotonic()
    build_mesh(parse_config(text))
    out.append(time.monotonic() - t0)
print(json.dumps(out))
"""


def parse_config(text: str):
    """``ROWSxCOLS[/core][/KB]`` (e.g. ``2x3/core/16``) as a :class:`MeshShape`.

    Raises
    ------
    ValueError
        Naming the text and the form it must take (and the mesh's own reason).
    """
    from sparktile.hdl.mesh import parse_mesh
    parts = str(text).strip().split("/")
    kw = {}
    for part in parts[1:]:
        if part == "core":
            kw["pe"] = "core"
        elif part.isdigit():
            kw["sram_kb"] = int(part)
        else:
            raise ValueError(f"configuration {text!r}: {part!r} is neither 'core' nor a size "
                             f"in KiB (the form is ROWSxCOLS[/core][/KB], e.g. 2x3/core/16)")
    return parse_mesh(parts[0], **kw)


def measure(configs: list[str], mode: str, cache: Path) -> dict:
    """Build ``configs`` in order in the empty ``cache`` with ``SPARKTILE_CCACHE=mode``."""
    env = {**os.environ, "SPARKTILE_CCACHE": mode, "SPARKTILE_CACHE": str(cache)}
    env.pop("SPARKTILE_BUILD", None)
    seconds, usage = run_child(_CHILD, configs, env, cache, f"the builds with ccache {mode}")
    return {"mode": mode, "build_s": [round(s, 1) for s in seconds],
            "total_s": round(sum(seconds), 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def _configs(ctx, param, value):
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("name at least one configuration, e.g. 2x2,2x3/core")
    for item in items:
        try:
            parse_config(item)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return items


@click.command()
@click.option("--configs", default=DEFAULT_CONFIGS, show_default=True, callback=_configs,
              help="Configurations built in this order: ROWSxCOLS[/core][/KB], comma-separated.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def main(configs, json_path):
    """Cold builds of several configurations with ccache off, then on."""
    if json_path:
        parent = Path(json_path).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise click.BadParameter(f"{parent} is not a writable folder", param_hint="--json")
    with tempfile.TemporaryDirectory(prefix="sparktile-ccache-") as tmp:
        runs = [measure(configs, mode, Path(tmp) / mode) for mode in ("off", "on")]
    off, on = runs
    click.echo(f"{'configuration':<16} {'off (s)':>8} {'on (s)':>8} {'on/off':>7}")
    for name, a, b in zip(configs, off["build_s"], on["build_s"], strict=True):
        click.echo(f"{name:<16} {a:>8.1f} {b:>8.1f} {b / a:>7.2f}")
    click.echo(f"{'total':<16} {off['total_s']:>8.1f} {on['total_s']:>8.1f} "
               f"{on['total_s'] / off['total_s']:>7.2f}")
    click.echo(f"{'CPU (all procs)':<16} {off['cpu_s']:>8.1f} {on['cpu_s']:>8.1f} "
               f"{on['cpu_s'] / off['cpu_s']:>7.2f}")
    if json_path:
        Path(json_path).write_text(json.dumps({"configs": configs, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
