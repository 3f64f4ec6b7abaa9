"""What the screenshot scripts share: the Qt application, an event pump, a worker wait."""

import time

from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QApplication

app = QApplication.instance() or QApplication([])


def pump(n=20):
    """Let Qt process events for about ``n`` x 50 ms (layers render, workers report)."""
    for _ in range(n):
        app.processEvents()
        time.sleep(0.05)


def wait(worker, seconds=300):
    """Start ``worker`` and keep the GUI responsive until it finishes (or ``seconds``)."""
    done = []
    worker.finished.connect(lambda: done.append(1))
    worker.start()
    start = time.time()
    while not done and time.time() - start < seconds:
        pump(1)
    QThreadPool.globalInstance().waitForDone(10000)
    pump()
