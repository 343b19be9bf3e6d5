"""issue 17: every command's argument parsing fed random and mutated command lines.

For each command, Hypothesis draws a command line from that command's own options (read from
click, so a new option is fuzzed without editing this file): each option present or not, its
value valid, at a bound, past a bound, NaN, infinite, negative, huge, empty, a mesh shape
that cannot exist, an output path in a folder that does not exist, or random text. The work
behind the parser is stubbed (the simulator, the model loader, the board, the FPGA tools:
reaching them means the command line was accepted), so an example costs milliseconds.

Property: the command either gets as far as its work (or finishes, for the pure-Python
``extrapolate`` and ``info``), or exits 2 with exactly one line on stderr, ``error: ...``.
Never another exception, never a multi-line usage dump, never exit 1 from a parse problem.

Default tier: :data:`DEFAULT_EXAMPLES` command lines per command, derandomized. Long tier
(``pytest -m fuzz tests/test_fuzz_cli.py``): :data:`LONG_EXAMPLES` command lines in all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from unittest import mock

import click
import pytest
from click.testing import CliRunner
from fuzzing import run_long
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from sparktile.cli import _COMMANDS, main

DEFAULT_EXAMPLES = 150
#: Command lines in the long tier, over all commands (one click parser, each command's own
#: option types and checks); split evenly between the commands.
LONG_EXAMPLES = 100_000

_COMMON = dict(deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DEFAULT = settings(max_examples=DEFAULT_EXAMPLES, derandomize=True, **_COMMON)

#: A folder for the output paths the command lines name (and the cwd of every invocation).
_WORK = tempfile.mkdtemp(prefix="sparktile-fuzz-cli-")


class Reached(Exception):
    """The command line was accepted: the command called the work behind it."""


def _reached(*args, **kwargs):
    raise Reached()


#: The work behind the parsers, replaced by :func:`_reached`.
STUBS = [
    "sparktile.cosim.sim.session.run_job",
    "sparktile.cosim.sim.build.mesh_verilog",
    "sparktile.golden_model.load.load_model",
    "sparktile.golden_model.load_model",
    "sparktile.cosim.board.host.open_transport",
    "sparktile.scripts.fpga_build.build_board",
    "sparktile.cosim.sim.build.build_mesh",
    "uvicorn.run",                       # serve: never start a server here
    "sparktile.cosim.regress._client",   # regress: never start a Dask cluster here
]


def _leaves():
    """(command path, click command) for every runnable command, groups expanded."""
    ctx = click.Context(main)
    out = []
    for name in sorted(_COMMANDS):
        cmd = main.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out += [((name, sub), cmd.commands[sub]) for sub in sorted(cmd.commands)]
        else:
            out.append(((name,), cmd))
    return out


LEAVES = dict(_leaves())
LONG = settings(**_COMMON)

_NASTY = ["nan", "inf", "-inf", "-1", "0", "1", "-0", "1e309", "1e-309", "", " ",
          "99999999999999999999", "0x10", "1.5", "abc", "2x2", "0x3", "33x1", "4x4x4", "x",
          "-", "--", "--help", "nodir/sub/out.json", ".", "/", "\x00", "é", "2x2 ", "1e3",
          "~0", "~nosuchuser/x"]   # "~0": found by the long run (expanduser RuntimeError)


def _bounds(t) -> list[str]:
    vals = []
    for attr in ("min", "max"):
        b = getattr(t, attr, None)
        if b is not None:
            vals += [str(b), str(b - 1), str(b + 1)]
            if isinstance(b, float):
                vals += [repr(b - 1e-9), repr(b + 1e-9)]
    return vals


def _values(param: click.Parameter):
    t = param.type
    choices = list(getattr(t, "choices", []) or [])
    base = _valid(param)
    typed = {
        click.INT: st.integers(-(1 << 40), 1 << 40).map(str),
        click.FLOAT: st.floats(allow_nan=True, allow_infinity=True).map(repr),
    }
    pool = [st.sampled_from(_NASTY + base + choices + _bounds(t) or _NASTY),
            st.text(max_size=12)]
    if isinstance(t, (click.IntRange, type(click.INT))):
        pool.append(typed[click.INT])
    if isinstance(t, (click.FloatRange, type(click.FLOAT))):
        pool.append(typed[click.FLOAT])
    return st.one_of(*pool)


def _valid(param: click.Parameter) -> list[str]:
    """Values the option takes (empty: leave it out when the line should be valid)."""
    t = param.type
    if getattr(t, "choices", None):
        return [str(c) for c in t.choices]
    vals = []
    if (param.default not in (None, (), []) and not callable(param.default)
            and type(param.default).__name__ != "Sentinel"):    # click's UNSET
        vals.append(str(param.default))
    lo, hi = getattr(t, "min", None), getattr(t, "max", None)
    vals += [str(v) for v in (lo, hi) if v is not None and abs(v) < 1e6]
    if isinstance(t, click.Path) and not getattr(t, "exists", False) and param.default is None:
        vals.append("out.file")         # a new file in a folder that exists (the cwd)
    return vals


@st.composite
def command_line(draw, path: tuple[str, ...]):
    """Mostly a valid line with one option damaged (the case a parser is most likely to let
    through), else several damaged, else a valid one."""
    cmd = LEAVES[path]
    mode = draw(st.sampled_from(["one bad", "one bad", "one bad", "random", "valid"]))
    options = [p for p in cmd.params if isinstance(p, click.Option)
               and p.name not in ("help", "version")]
    bad = draw(st.sampled_from(options)) if options and mode == "one bad" else None
    _event(f"line: {mode}")
    argv = list(path)
    for param in cmd.params:
        if isinstance(param, click.Argument):
            if param.required or draw(st.booleans()):
                value = (draw(_values(param)) if mode == "random" or draw(st.booleans())
                         else "def f(x):")
                argv.append(value)
            continue
        if param not in options:
            continue
        damaged = mode == "random" and draw(st.booleans()) or param is bad
        valid = _valid(param)
        if not damaged and (param.is_flag or not valid):
            if param.is_flag and draw(st.booleans()):
                argv.append(param.opts[0])
            continue
        if not damaged and not draw(st.booleans()):
            continue                            # a valid option left at its default
        flag = draw(st.sampled_from(param.opts + param.secondary_opts))
        if param.is_flag:
            argv.append(flag)
            continue
        value = draw(_values(param)) if damaged else draw(st.sampled_from(valid))
        argv += [flag, value]
    if mode == "random" and draw(st.integers(0, 4)) == 0:   # an argument nobody asked for
        argv.append(draw(st.sampled_from(["--bogus", "extra", "-z"])))
    return argv


def _event(what: str) -> None:
    if currently_in_test_context():
        event(what)


def check(argv: list[str]) -> None:
    with contextlib.ExitStack() as stack:
        for target in STUBS:
            stack.enter_context(mock.patch(target, _reached))
        stack.enter_context(mock.patch.dict(os.environ, {"SPARKTILE_CACHE": _WORK}))
        cwd = os.getcwd()
        os.chdir(_WORK)
        try:
            res = CliRunner().invoke(main, argv)
        finally:
            os.chdir(cwd)
    if isinstance(res.exception, Reached):
        _event("accepted: reached the work")
        return
    assert res.exception is None or isinstance(res.exception, SystemExit), \
        f"{argv!r} raised {res.exception!r}\n{res.stderr}"
    if res.exit_code == 0:
        _event("accepted: finished")
        return
    if argv[0] == "info" and res.exit_code == 1:
        assert "MISSING" in res.stdout     # info's status: a tool is missing (documented)
        _event("accepted: finished")
        return
    assert res.exit_code == 2, f"{argv!r} exited {res.exit_code}:\n{res.stderr}"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), \
        f"{argv!r}: not one error line:\n{res.stderr}"
    assert "Traceback" not in res.output
    _event("refused: one line")


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
@DEFAULT
@given(data=st.data())
def test_fuzz_command_line(path, data):
    check(data.draw(command_line(path)))


@pytest.mark.fuzz
@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_fuzz_long_command_line(path):
    run_long(check, command_line(path), settings_=LONG, total=-(-LONG_EXAMPLES // len(LEAVES)))
