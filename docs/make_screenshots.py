"""Take the user guide's screenshots (run under Xvfb: xvfb-run -a python docs/make_screenshots.py).

Needs the folder holding the real images, named by the environment variable
``DENODET_DATA`` (``timelapse_telomeres_2d.tif``).
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


viewer = napari.Viewer(show=True)
viewer.window.resize(1400, 850)
viewer.open(str(DATA / "timelapse_telomeres_2d.tif"), plugin="napari-denodet")
_, widget = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
widget._last.value = 20
viewer.dims.set_point(0, 10)
pump()
iio.imwrite("docs/img/guide_1_open.png", viewer.screenshot(canvas_only=False))
worker = widget.start(start_thread=False)
done = []
worker.finished.connect(lambda: done.append(1))
worker.start()
t = time.time()
while not done and time.time() - t < 120:
    pump(1)
QThreadPool.globalInstance().waitForDone(10000)
pump()
viewer.dims.set_point(0, 10)
viewer.layers["timelapse_telomeres_2d denoised"].visible = False
pump()
iio.imwrite("docs/img/guide_2_detected.png", viewer.screenshot(canvas_only=False))
n_default = len(viewer.layers["timelapse_telomeres_2d particles"].data)
widget._threshold.value = 0.7
pump()
iio.imwrite("docs/img/guide_3_threshold.png", viewer.screenshot(canvas_only=False))
n_high = len(viewer.layers["timelapse_telomeres_2d particles"].data)
viewer.layers["timelapse_telomeres_2d"].visible = False
viewer.layers["timelapse_telomeres_2d denoised"].visible = True
pump()
iio.imwrite("docs/img/guide_4_denoised.png", viewer.screenshot(canvas_only=False))
viewer.layers.selection = {viewer.layers["timelapse_telomeres_2d particles"]}
print(n_default, n_high)
viewer.close()
