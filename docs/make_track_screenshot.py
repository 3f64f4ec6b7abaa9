"""Take the user guide's Track particles screenshot.

Run under Xvfb: ``xvfb-run -a python docs/make_track_screenshot.py``.

Needs the folder holding the real images, named by the environment variable
``DENODET_DATA`` (``timelapse_telomeres_2d.tif``). Detects on the first 40 frames with
the defaults, links with the estimated step, and hides one-frame tracks.
"""
import os
import time
from pathlib import Path

import imageio.v3 as iio
import napari
from qtpy.QtCore import QThreadPool
from qtpy.QtWidgets import QApplication

DATA = Path(os.environ["DENODET_DATA"])  # the folder holding the real images

app = QApplication.instance() or QApplication([])


def pump(n=20):
    """Let Qt process events for about ``n`` x 50 ms (layers render, workers report)."""
    for _ in range(n):
        app.processEvents()
        time.sleep(0.05)


def finish(worker, seconds=180):
    """Start a worker and pump events until it has finished."""
    done = []
    worker.finished.connect(lambda: done.append(1))
    worker.start()
    started = time.time()
    while not done and time.time() - started < seconds:
        pump(1)
    QThreadPool.globalInstance().waitForDone(10000)
    pump()


viewer = napari.Viewer(show=True)
viewer.window.resize(1400, 850)
viewer.open(str(DATA / "timelapse_telomeres_2d.tif"), plugin="napari-denodet")
_, detect = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
detect._last.value = 40
finish(detect.start(start_thread=False))
viewer.layers["timelapse_telomeres_2d denoised"].visible = False
_, track = viewer.window.add_plugin_dock_widget("napari-denodet", "Track particles")
finish(track.start(start_thread=False))
track._shortest.value = 2
tracks = viewer.layers["timelapse_telomeres_2d tracks"]
tracks.tail_length, tracks.tail_width = 40, 4  # the whole 40 frames, visible
viewer.dims.set_point(0, 39)
viewer.reset_view()
pump()
iio.imwrite("docs/img/guide_7_tracks.png", viewer.screenshot(canvas_only=False))
print(track._summary.value)
viewer.close()
