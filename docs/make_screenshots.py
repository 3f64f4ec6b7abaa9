"""Take the user guide's screenshots (run under Xvfb: xvfb-run -a python docs/make_screenshots.py).

Needs the folder holding the real images, named by the environment variable
``DENODET_DATA`` (``timelapse_telomeres_2d.tif``).
"""
import os
from pathlib import Path

import imageio.v3 as iio
import napari
from screens import pump, wait

DATA = Path(os.environ["DENODET_DATA"])  # the folder holding the real images

viewer = napari.Viewer(show=True)
viewer.window.resize(1400, 850)
viewer.open(str(DATA / "timelapse_telomeres_2d.tif"), plugin="napari-denodet")
_, widget = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
widget._last.value = 20
viewer.dims.set_point(0, 10)
pump()
iio.imwrite("docs/img/guide_1_open.png", viewer.screenshot(canvas_only=False))
wait(widget.start(start_thread=False), seconds=120)
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
