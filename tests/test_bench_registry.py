"""The bench protocol (cosim/sim/registry.py): benches by object, results as dataclasses.

Pure Python: a result written by the simulator side (``encode``) comes back on the host side
(``decode``) as the same dataclass, field for field; a function that is not a registered
bench is refused by name before any build starts.
"""

import dataclasses
import json
import typing

import pytest
from sparktile.cosim.benches.calibration import SweepResult, gemv_sweep
from sparktile.cosim.benches.gemv import BadTaskResult, GemvResult, bad_task, gemv
from sparktile.cosim.benches.llm import LlmResult, llm_run
from sparktile.cosim.benches.stress import (
    BadConfigResult,
    LatencyResult,
    StrayResult,
    StressResult,
    ThroughputResult,
    bad_config,
    latency,
    stray_wavelets,
    stress,
    throughput,
)
from sparktile.cosim.sim import registry
from sparktile.cosim.sim.registry import BenchResult, JobInfo
from sparktile.hdl.mesh import MeshShape

BENCHES = {gemv: GemvResult, stress: StressResult, latency: LatencyResult,
           throughput: ThroughputResult, bad_config: BadConfigResult, llm_run: LlmResult,
           gemv_sweep: SweepResult, bad_task: BadTaskResult, stray_wavelets: StrayResult}


def _sample(cls, seed: int):
    """An instance of result class ``cls`` with every field set to a value of its type."""
    hints = typing.get_type_hints(cls)
    values = {}
    for i, f in enumerate(dataclasses.fields(cls)):
        if f.name == "job":
            continue
        t = hints[f.name]
        origin = typing.get_origin(t)
        args = typing.get_args(t)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            t = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(t), typing.get_args(t)
        if t is bool:
            v = bool((seed + i) % 2)
        elif t is int:
            v = seed * 100 + i
        elif t is float:
            v = seed + i / 8
        elif t is str:
            v = f"{f.name}-{seed}"
        elif t is dict:
            v = {"k": seed + i, "nested": [i, "x"]}
        elif t is list or origin is list:
            elem = args[0] if args else int
            v = ([_sample(elem, seed + i)] if dataclasses.is_dataclass(elem)
                 else [seed, i, seed + i])
        else:
            raise AssertionError(f"no sample for {cls.__name__}.{f.name}: {t}")
        values[f.name] = v
    return cls(**values)


@pytest.mark.parametrize("function", list(BENCHES), ids=lambda f: f.__name__)
def test_every_bench_is_registered_with_its_result_class(function):
    name = registry.name_of(function)
    assert registry.lookup(name).function is function
    assert registry.lookup(name).result is BENCHES[function]


@pytest.mark.parametrize("cls", sorted(set(BENCHES.values()), key=lambda c: c.__name__))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_result_survives_the_trip_through_json_field_for_field(cls, seed):
    result = _sample(cls, seed)
    function = next(f for f, c in BENCHES.items() if c is cls)
    name = registry.name_of(function)
    wire = json.loads(json.dumps(registry.encode(result)))   # what the simulator writes
    job = JobInfo(end_cycle=seed * 7, waves_stopped={"cycle": 5, "bytes": 9}, build_s=1.5)
    back = registry.decode(name, wire, job)
    assert type(back) is cls
    assert back.job == job
    assert dataclasses.replace(back, job=result.job) == result
    # Reports hold the bench's fields and the job's, as JSON.
    report = json.loads(json.dumps(back.to_json()))
    assert report["job"]["end_cycle"] == seed * 7
    assert set(report) == {f.name for f in dataclasses.fields(cls)}


def test_a_result_missing_a_field_is_refused_by_its_name():
    wire = registry.encode(_sample(LatencyResult, 1))
    del wire["samples"]
    with pytest.raises(TypeError, match="samples"):
        registry.decode(registry.name_of(latency), wire, JobInfo())


def test_a_bench_must_return_its_result_dataclass():
    with pytest.raises(TypeError, match="BenchResult"):
        registry.encode({"cycles": 1})


async def _not_registered(fabric):
    return None


@pytest.mark.parametrize("thing", [_not_registered, "sparktile.cosim.benches.gemv:gemv", None,
                                   print], ids=["function", "string", "None", "builtin"])
def test_run_job_refuses_what_is_not_a_registered_bench_before_building(thing, monkeypatch):
    from sparktile.cosim.sim import session

    def no_build(*a, **k):
        raise AssertionError("a build started")

    monkeypatch.setattr(session, "build_mesh", no_build)
    with pytest.raises(TypeError, match="not a registered bench") as e:
        session.run_job(MeshShape(1, 1), thing, {})
    assert "gemv" in str(e.value)    # the message lists the benches there are


def test_registering_needs_a_result_dataclass():
    with pytest.raises(TypeError, match="BenchResult"):
        registry.bench(dict)
    assert issubclass(GemvResult, BenchResult)
