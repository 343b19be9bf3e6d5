"""Performance and error counters, counted the same way in every block."""

from amaranth.hdl import Module, Signal, Value

__all__ = ["count_events"]


def count_events(m: Module, counter: Signal, *events: Value) -> None:
    """Add the number of ``events`` set this cycle to ``counter``, one cycle later.

    The events are registered before they are added, so no path runs from the logic that
    raises them (a router's arbiter, a task FSM) into the counter's carry chain; the count
    lags its events by one cycle, and wraps at the counter's width.
    """
    inc = Signal(range(len(events) + 1), name=f"{counter.name}_inc")
    m.d.sync += [inc.eq(sum(events)), counter.eq(counter + inc)]
