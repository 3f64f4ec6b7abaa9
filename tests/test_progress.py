"""Typed progress stages: the core yields Stage members, the faces compare against them."""

import json
import re
from pathlib import Path

import numpy as np

from helpers import drain
from napari_denodet.core.models import load_model
from napari_denodet.core.progress import Stage
from napari_denodet.core.train import TrainSettings, train

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_denodet"


def test_a_stage_is_its_string():
    assert Stage.TRAIN == "train" and f"{Stage.NOTE}" == "note" and str(Stage.CHECK) == "check"
    assert f"{Stage.DETECT:>8}" == "  detect"
    assert json.dumps({"stage": Stage.VALIDATE}) == '{"stage": "validate"}'
    assert Stage("calibrate") is Stage.CALIBRATE


def test_detection_and_training_yield_stage_members():
    image = np.random.default_rng(0).normal(100.0, 5.0, (48, 48)).astype(np.float32)
    _, steps = drain(load_model("fluorescence").detect(image))
    assert steps and all(p.stage is Stage.DETECT for p in steps)
    _, reports = drain(train(TrainSettings(steps=2, batch_size=2, patch_size=32,
                                           eval_every=2, warmup_fraction=0.5,
                                           validation_patches=2)))
    assert [r.stage for r in reports] == [Stage.TRAIN, Stage.TRAIN, Stage.VALIDATE]
    assert all(type(r.stage) is Stage for r in reports)


def test_the_faces_compare_stages_with_stage_members_not_strings():
    faces = [*sorted((SRC / "cli").rglob("*.py")), *sorted((SRC / "_widgets").glob("*.py"))]
    literal = re.compile(r"""\.stage\s*(==|!=|\bin\b)\s*[("'\[]""")
    readers = []
    for path in faces:
        text = path.read_text()
        assert not literal.search(text), f"{path.name} compares a stage with a string"
        if ".stage" in text:
            readers.append(path.name)
            assert "Stage." in text, path.name
    assert {"finetune.py", "train.py"} <= set(readers)
    # The core builds its progress records with Stage members, never a string.
    core = "\n".join(p.read_text() for p in (SRC / "core").rglob("*.py"))
    assert not re.search(r"""Progress\(\s*["']""", core)
