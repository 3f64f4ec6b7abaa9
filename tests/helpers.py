"""Small helpers shared by the test files (imported as ``helpers``; pytest puts this
folder on ``sys.path``)."""

from __future__ import annotations


def drain(generator):
    """Run a generator to its end; return its return value and everything it yielded."""
    yielded = []
    while True:
        try:
            yielded.append(next(generator))
        except StopIteration as stop:
            return stop.value, yielded
