"""Take the user guide's Track particles screenshot.

Run under Xvfb: ``xvfb-run -a python docs/make_track_screenshot.py``.

Needs the folder holding the real images, named by the environment variable
``DENODET_DATA`` (``timelapse_telomeres_2d.tif``). Detects on the first 40 frames with
the defaults, links with the estimated step, and hides one-frame tracks.
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
_, detect = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
detect._last.value = 40
wait(detect.start(start_thread=False))
viewer.layers["timelapse_telomeres_2d denoised"].visible = False
_, track = viewer.window.add_plugin_dock_widget("napari-denodet", "Track particles")
wait(track.start(start_thread=False))
track._shortest.value = 2
tracks = viewer.layers["timelapse_telomeres_2d tracks"]
tracks.tail_length, tracks.tail_width = 40, 4  # the whole 40 frames, visible
viewer.dims.set_point(0, 39)
viewer.reset_view()
pump()
iio.imwrite("docs/img/guide_7_tracks.png", viewer.screenshot(canvas_only=False))
print(track._summary.value)
viewer.close()
