"""Running a Verilator build and showing that it progresses.

A cold build is two phases: Verilator translating the Verilog into C++ (one process, silent),
then the C++ compiler working through the generated units under ``make -j``. This module runs
the build's commands with their output in a log file, and meanwhile reports the phase, the
units compiled of the total that the generated makefiles list, the elapsed time and an
estimate of the time left (from the C++ bytes compiled so far). On a terminal it refreshes one
status line; otherwise it prints a plain line every :data:`PLAIN_INTERVAL_S` seconds.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["run_build", "BuildCommandError", "count_units", "exit_description"]

#: Seconds between plain progress lines when stderr is not a terminal.
PLAIN_INTERVAL_S = 20.0
#: Seconds between refreshes of the status line on a terminal.
TTY_INTERVAL_S = 0.5


class BuildCommandError(RuntimeError):
    """A build command exited non-zero; the message names the command and the log."""


_LIST = re.compile(r"^(VM_[A-Z_]+)\s*\+?=\s*((?:.*\\\n)*.*)$", re.M)


def _mk_lists(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, body in _LIST.findall(text):
        out.setdefault(name, []).extend(body.replace("\\\n", " ").split())
    return out


@dataclass
class Units:
    """Compilation units of a build: how many the makefiles list, how many are compiled, and
    the bytes of C++ source behind each group."""

    total: int = 0
    done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0


def count_units(directory: Path) -> Units:
    """Count the C++ units of the Verilated model(s) in ``directory`` and its subfolders
    (hierarchical blocks have their own), from the ``*_classes.mk`` files Verilator wrote.

    With ``VM_PARALLEL_BUILDS = 0`` Verilator's makefile compiles the model as one unit
    (``<prefix>__ALL.cpp``); otherwise one unit per listed class. The runtime units
    (``VM_GLOBAL_*``) and the user's C++ (``VM_USER_CLASSES``) count one each.
    """
    units = Units()
    for classes_mk in sorted(directory.glob("**/*_classes.mk")):
        d = classes_mk.parent
        prefix = classes_mk.name[: -len("_classes.mk")]
        try:
            lists = _mk_lists(classes_mk.read_text())
            main_mk = d / f"{prefix}.mk"
            user = _mk_lists(main_mk.read_text()).get("VM_USER_CLASSES", []) \
                if main_mk.exists() else []
        except OSError:
            continue
        parallel = "1" in lists.get("VM_PARALLEL_BUILDS", ["0"])
        model = [c for k in ("VM_CLASSES_FAST", "VM_CLASSES_SLOW", "VM_SUPPORT_FAST",
                             "VM_SUPPORT_SLOW") for c in lists.get(k, [])]
        names = (model if parallel else [f"{prefix}__ALL"]) + \
            lists.get("VM_GLOBAL_FAST", []) + lists.get("VM_GLOBAL_SLOW", []) + user
        for name in names:
            units.total += 1
            src = d / f"{name}.cpp"
            size = src.stat().st_size if src.exists() else 0
            units.bytes_total += size
            if (d / f"{name}.o").exists():
                units.done += 1
                units.bytes_done += size
    return units


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Reporter:
    def __init__(self, what: str, directory: Path, stream):
        self.what = what
        self.directory = directory
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.compile_t0: float | None = None
        self.last_plain = self.t0
        self.last_line = ""

    def line(self) -> str:
        now = time.monotonic()
        units = count_units(self.directory)
        elapsed = _fmt_s(now - self.t0)
        if units.total == 0:
            return f"{self.what}: Verilating (Verilog -> C++), {elapsed} elapsed"
        if self.compile_t0 is None:
            self.compile_t0 = now
        text = f"{self.what}: compiled {units.done} of {units.total} C++ units, {elapsed} elapsed"
        spent = now - self.compile_t0
        # An estimate only once a fair share is compiled: the first units are the small
        # runtime files, whose rate says little about the big model units.
        if units.bytes_done >= 0.1 * units.bytes_total and \
                units.bytes_total > units.bytes_done and spent > 1:
            left = spent * (units.bytes_total - units.bytes_done) / units.bytes_done
            text += f", about {_fmt_s(left)} left"
        return text

    def tick(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            text = self.line()
            pad = max(0, len(self.last_line) - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self.stream.flush()
            self.last_line = text
        elif final or now - self.last_plain >= PLAIN_INTERVAL_S:
            self.last_plain = now
            print(f"[sparktile] {self.line()}", file=self.stream, flush=True)


def run_build(cmds: Sequence[Sequence[str]], *, cwd: Path, env: dict | None, log: Path,
              what: str, directory: Path, stream=None, show: bool = True) -> None:
    """Run ``cmds`` one after the other in ``cwd`` with their output in ``log``, reporting
    progress on ``stream`` (default stderr) unless ``show`` is false.

    Raises
    ------
    BuildCommandError
        When a command exits non-zero (naming it and the log).
    """
    stream = stream if stream is not None else sys.stderr
    reporter = _Reporter(what, directory, stream) if show else None
    interval = TTY_INTERVAL_S if reporter and reporter.tty else 1.0
    with open(log, "a") as out:
        for cmd in cmds:
            out.write("$ " + " ".join(map(str, cmd)) + "\n")
            out.flush()
            proc = subprocess.Popen(list(map(str, cmd)), cwd=cwd, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
            try:
                while True:
                    try:
                        rc = proc.wait(timeout=interval)
                        break
                    except subprocess.TimeoutExpired:
                        if reporter:
                            reporter.tick()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if rc != 0:
                if reporter and reporter.tty:
                    stream.write("\n")
                raise BuildCommandError(f"`{Path(str(cmd[0])).name}` exited with {rc} while "
                                        f"building {what}; see {log}")
    if reporter:
        reporter.tick(final=True)


def exit_description(returncode: int) -> str:
    """How a process ended, for an error message: ``exit status 3``, or for a negative
    return code the signal that killed it (``-11`` -> ``killed by SIGSEGV``)."""
    if returncode >= 0:
        return f"exit status {returncode}"
    import signal
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
