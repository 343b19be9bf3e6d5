"""The ``sparktile`` command line.

Each sub-command lives beside the code it drives (``sparktile.cosim.cli`` for the fabric and
GEMV benches, ``sparktile.golden_model.cli`` for the model, ...) and is listed once in
:data:`_COMMANDS`; they are imported only when invoked, so ``sparktile info`` works even when
a heavy dependency of another command is missing.
"""

from __future__ import annotations

import importlib
import sys

import click

from .errors import EXIT_USER_ERROR, UserError, one_line

# name -> (module, attribute). One line per command; keep sorted by topic.
_COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("sparktile.toolchain", "info_command"),
    "verilog": ("sparktile.cosim.cli", "verilog_command"),
    "stress": ("sparktile.cosim.cli", "stress_command"),
    "gemv": ("sparktile.cosim.cli", "gemv_command"),
    "run": ("sparktile.cosim.cli", "run_command"),
    "regress": ("sparktile.cosim.regress", "regress_command"),
    "generate": ("sparktile.golden_model.cli", "generate_command"),
    "eval": ("sparktile.golden_model.cli", "eval_command"),
    "calibrate": ("sparktile.scripts.extrapolate", "calibrate_command"),
    "extrapolate": ("sparktile.scripts.extrapolate", "extrapolate_command"),
    "fpga": ("sparktile.scripts.fpga", "fpga_group"),
    "serve": ("sparktile.serve", "serve_command"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        if name not in _COMMANDS:
            return None
        module, attr = _COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        # click's own usage errors (a bad option value, a missing argument) print three lines
        # (usage, a hint, the error); here they are one line like every other user error.
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = sys.argv[1:] if args is None else list(args)
        for i, arg in enumerate(argv, 1):
            # A shell cannot pass one (argv are C strings), but a caller in Python can, and
            # every path option would fail on it inside os.stat.
            if isinstance(arg, str) and "\0" in arg:
                click.echo(f"error: argument {i} ({arg!r}) contains a NUL byte", err=True)
                sys.exit(EXIT_USER_ERROR)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            e.show()                       # bare "sparktile": the help, as click shows it
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
            click.echo(f"error: {one_line(e.format_message())}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        # The one error path of every command: a user error is one line and exit status 2;
        # any other exception is a bug and keeps its traceback.
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {one_line(e)}", err=True)
            ctx.exit(EXIT_USER_ERROR)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparktile")
def main():
    """sparktile: a wafer-scale code-LLM accelerator tile, co-simulated cycle by cycle."""


if __name__ == "__main__":  # pragma: no cover
    main()
