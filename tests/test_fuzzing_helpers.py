"""The long fuzz tier's runner: every example run, as independent seeded Hypothesis runs."""

import pytest
from fuzzing import run_long
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_S = settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))


def test_run_long_runs_the_total_in_parts():
    seen = []
    run_long(lambda a, b: seen.append((a, b)), st.integers(0, 10**9), st.booleans(),
             settings_=_S, total=70, part=25)
    assert len(seen) == 70
    assert len({a for a, _ in seen}) > 35       # the parts draw different examples


def test_run_long_reports_a_failing_example():
    def body(x):
        assert x < 50, x
    with pytest.raises(AssertionError, match="50"):    # shrunk to the smallest failure
        run_long(body, st.integers(0, 1000), settings_=_S, total=200, part=50)
