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


def scattered(truth, n: int):
    """n particles of frame 0 of a truth table spread over all of it (clicked here and
    there, not a completely clicked area)."""
    import numpy as np

    first = truth[truth.frame == 0].sort_values(["y", "x"])
    return first.iloc[np.linspace(0, len(first) - 1, n).astype(int)]
