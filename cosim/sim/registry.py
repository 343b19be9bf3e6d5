"""Benches by object: the host names a bench by the function itself, never by a string.

A bench is an ``async def bench(fabric, **args)`` that drives a running mesh and returns a
result dataclass (a subclass of :class:`BenchResult`). :func:`bench` registers it; the host
passes the function object to :func:`~sparktile.cosim.sim.session.run_job`, which asks
:func:`name_of` for the name that travels in the JSON job (so a misspelt bench is an
``AttributeError`` at the host's import, not a failure inside the simulator), and turns the
JSON the simulator wrote back into the bench's result class with :func:`decode`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["bench", "name_of", "lookup", "encode", "decode", "BenchResult", "JobInfo"]


@dataclass
class JobInfo:
    """What the job runner and the host add to every result.

    ``end_cycle``: the simulator's cycle when the bench returned; ``waves_stopped``: where a
    waveform dump was closed by its size limit (``{"cycle", "bytes"}``; None when it was not);
    ``bench_wall_s``: the bench's own wall time inside the simulator; ``build_s``: the
    Verilator build's time (0 when cached); ``process_wall_s``: the simulator process's wall
    time as the host saw it.
    """

    end_cycle: int = 0
    waves_stopped: dict | None = None
    bench_wall_s: float = 0.0
    build_s: float = 0.0
    process_wall_s: float = 0.0


@dataclass
class BenchResult:
    """Base of every bench's result: the bench's fields, then the job's (:class:`JobInfo`)."""

    job: JobInfo = field(default_factory=JobInfo, kw_only=True)

    def to_json(self) -> dict:
        """The result as JSON-ready data (nested dataclasses as dicts)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Entry:
    function: Callable
    result: type[BenchResult]


_BENCHES: dict[str, _Entry] = {}


def bench(result: type[BenchResult]):
    """Register the decorated async function as a bench returning ``result``."""
    if not (isinstance(result, type) and issubclass(result, BenchResult)):
        raise TypeError(f"a bench's result must be a BenchResult dataclass, not {result!r}")

    def register(function):
        _BENCHES[_key(function)] = _Entry(function, result)
        return function

    return register


def _key(function) -> str:
    return f"{function.__module__}:{function.__qualname__}"


def name_of(function) -> str:
    """The registered name of bench ``function`` (what the JSON job carries)."""
    key = _key(function) if callable(function) else None
    if key not in _BENCHES or _BENCHES[key].function is not function:
        known = ", ".join(sorted(k.rsplit(":", 1)[1] for k in _BENCHES)) or "none imported"
        raise TypeError(f"{function!r} is not a registered bench (decorate it with "
                        f"@bench(ResultClass); registered: {known})")
    return key


def lookup(name: str) -> _Entry:
    """The bench registered as ``name`` (importing its module first)."""
    module = name.split(":", 1)[0]
    importlib.import_module(module)
    if name not in _BENCHES:
        raise LookupError(f"no bench registered as {name!r}")
    return _BENCHES[name]


def encode(result: BenchResult) -> dict:
    """A bench's result as the JSON the simulator writes (without the job part)."""
    if not isinstance(result, BenchResult):
        raise TypeError(f"a bench must return a BenchResult dataclass, not {type(result)}")
    data = result.to_json()
    data.pop("job")
    return data


def decode(name: str, data: dict, job: JobInfo) -> BenchResult:
    """The result of bench ``name`` from its JSON ``data`` (fields exactly as written)."""
    result = lookup(name).result
    return result.from_json(data, job) if hasattr(result, "from_json") else result(**data,
                                                                                 job=job)
