"""Guards shared by the property-based tests (``tests/test_fuzz_*.py``)."""

from __future__ import annotations

import contextlib
import signal

from hypothesis import given, seed, settings
from hypothesis import strategies as st

__all__ = ["Hang", "time_limit", "run_long", "LONG_PART"]

#: Examples per independent Hypothesis run in the long tier. One run keeps every example's
#: choice sequence for its mutator: about 13 MB per 1,000 examples of a 3 kB GGUF file, and a
#: single 100,000-example run of the GGUF reader was at 17.8 GB when it was stopped (two
#: earlier ones were killed for memory, rc 137). Independent runs of this size, each with its
#: own seed, keep the peak near 150 MB.
LONG_PART = 10_000


class Hang(Exception):
    """An example ran past its time limit (not a clean error: the test fails)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`Hang` in the ``with`` body once ``seconds`` have passed (SIGALRM: the
    main thread only, as pytest runs tests)."""
    def on_alarm(signum, frame):
        raise Hang(f"example still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_long(body, *strategies, settings_: settings, total: int, part: int = LONG_PART):
    """``body(*drawn)`` for ``total`` examples of ``strategies``, as independent Hypothesis
    runs of ``part`` examples with seeds 0, 1, ... (see :data:`LONG_PART`); a failing example
    is shrunk and reported as in any Hypothesis test, with the seed of its run.

    Prints (``pytest -rA`` shows it) how many examples ran: fewer than ``total`` where a small
    input space was exhausted (Hypothesis stops a run once it has tried every distinct input).
    Returns that number.
    """
    ran = 0
    for i in range(-(-total // part)):
        n = min(part, total - i * part)

        @seed(i)
        @settings(settings_, max_examples=n, derandomize=False)
        @given(st.tuples(*strategies))
        def one(drawn):
            nonlocal ran
            ran += 1
            body(*drawn)

        one()
    print(f"run_long: {ran} examples run ({total} asked, {-(-total // part)} runs of up to "
          f"{part})")
    return ran
