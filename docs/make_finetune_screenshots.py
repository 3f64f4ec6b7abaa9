"""Take the fine-tuning screenshots of the user guide on the real EMPIAR-10017 micrograph.

Run under Xvfb: ``xvfb-run -a .venv/bin/python docs/make_finetune_screenshots.py``.
Needs the folder holding the real images, named by the environment variable
``DENODET_DATA`` (``empiar10017_micrograph.jpg`` and its picks). Clicks are the 10
expert picks nearest the micrograph's centre (what a user would click in one region).
"""

import os
from pathlib import Path

import imageio.v3 as iio
import napari
import numpy as np
import pandas as pd
from screens import pump, wait

DATA = Path(os.environ["DENODET_DATA"])  # the folder holding the real images


viewer = napari.Viewer(show=True)
viewer.window.resize(1400, 850)
viewer.open(str(DATA / "empiar10017_micrograph.jpg"), plugin="napari-denodet")
name = "empiar10017_micrograph"
picks = pd.read_csv(DATA / "empiar10017_coords.csv")
yx = picks[["Y-Coordinate", "X-Coordinate"]].to_numpy(float)
nearest = yx[np.argsort(np.hypot(*(yx - 2048).T))[:10]]

_, tune = viewer.window.add_plugin_dock_widget("napari-denodet", "Fine-tune")
clicks = tune.new_annotation_layer()
clicks.data = nearest
clicks.size = 60
tune._model.value = "micrograph"
tune._binning.value = 6  # what `--diameter 108` gives for the micrograph model
viewer.camera.center = (2048, 2048)
viewer.camera.zoom = 0.5
pump()
wait(tune.start(start_thread=False))
iio.imwrite("docs/img/guide_5_finetune.png", viewer.screenshot(canvas_only=False))

tune.use_for_detect()
_, detect = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
pump()
wait(detect.start(start_thread=False))
viewer.layers[f"{name} denoised"].visible = False
viewer.layers[f"{name} particles"].size = 60
pump()
iio.imwrite("docs/img/guide_6_finetuned_detect.png", viewer.screenshot(canvas_only=False))
print(tune._status.value, len(viewer.layers[f"{name} particles"].data))
viewer.close()
