"""Guards shared by the property-based tests (``tests/test_fuzz_*.py``)."""

from __future__ import annotations

import contextlib
import signal

__all__ = ["Hang", "time_limit"]


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
