"""The typed model card: hostile cards give one line naming the file and the field."""

import json
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_denodet.cli import main
from napari_denodet.core.card import ModelCard
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import write_tiff
from napari_denodet.core.models import Model, bundled_models, load_model, save_model
from napari_denodet.core.network import Denodet, NetworkConfig


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    network = Denodet(NetworkConfig(widths=(4, 8, 8))).eval()
    return save_model(tmp_path / "hostile.pt", network, {"name": "hostile"})


def _with_card(path: Path, **fields) -> Path:
    # Replace fields of the card beside `path` (written as JSON, NaN included).
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) | fields
    card_path.write_text(json.dumps(card))
    return card_path


@pytest.mark.parametrize(("fields", "field", "said"), [
    ({"threshold": "high"}, "threshold", "must be a number in [0, 1], got 'high'"),
    ({"threshold": float("nan")}, "threshold", "got nan"),
    ({"threshold": True}, "threshold", "got True"),
    ({"localisation": {"radius": 100000}}, "localisation.radius",
     "must be an integer in [1, 10], got 100000"),
    ({"localisation": {"temperature": -1}}, "localisation.temperature", "must be a number > 0"),
    ({"localisation": {"min_distance": 2.5}}, "localisation.min_distance", "an integer"),
    ({"localisation": {"merge_ratio": 2}}, "localisation.merge_ratio", "in [0, 1]"),
    ({"localisation": [2, 1.0]}, "localisation", "must be a JSON object"),
    ({"localisation": {"window": 5}}, "localisation.window", "is not a localisation setting"),
    ({"localisation": {"blob": {"weight": 0.1, "sigma": 5000}}}, "localisation.blob.sigma",
     "(0, 20]"),
    ({"invert": "yes"}, "invert", "must be true or false"),
    ({"particle_size": {"radius_px": [5, 100000]}}, "particle_size.radius_px",
     "(0, 1000]"),
    ({"particle_size": {"radius_px": [-5, 15]}}, "particle_size.radius_px", "got -5"),
    ({"particle_size": {"radius_px": [15, 5]}}, "particle_size.radius_px", "[low, high]"),
    ({"particle_size": "big"}, "particle_size", "must be a JSON object"),
    ({"name": ["a"]}, "name", "must be a string"),
    ({"training": "by hand"}, "training", "must be a JSON object"),
    ({"training": {"binning": 100000}}, "training.binning", "in [1, 64]"),
    ({"training": {"settings": {"temperature": "warm"}}}, "training.settings.temperature",
     "must be a number > 0"),
    ({"deviations": {"a": 1}}, "deviations", "must be a JSON array"),
    ({"parent": 3}, "parent", "must be a JSON object"),
])
def test_hostile_cards_give_one_line_naming_the_card_and_the_field(model_file, fields,
                                                                   field, said):
    card_path = _with_card(model_file, **fields)
    with pytest.raises(InputError) as info:
        load_model(model_file)
    message = str(info.value)
    assert "\n" not in message and info.value.path == str(card_path)
    assert message.startswith(f"{card_path}: bad model card: {field} ")
    assert said in message


def test_a_card_that_is_not_an_object_is_refused(model_file):
    card_path = model_file.with_suffix(".json")
    card_path.write_text("[1, 2, 3]")
    with pytest.raises(InputError, match="the card must be a JSON object"):
        load_model(model_file)
    card_path.write_text("{nope")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model(model_file)


def test_the_card_inside_the_weights_is_checked_too(model_file):
    payload = torch.load(model_file, weights_only=True)
    payload["card"]["threshold"] = 7.0
    torch.save(payload, model_file)
    model_file.with_suffix(".json").unlink()
    with pytest.raises(InputError, match=r"hostile.pt: bad model card: threshold "):
        load_model(model_file)


def test_unknown_fields_are_kept_and_written_back(model_file, tmp_path):
    _with_card(model_file, colour={"of": "the day"}, threshold=0.3)
    model = load_model(model_file)
    assert model.card.extra == {"colour": {"of": "the day"}}
    assert model.threshold == 0.3
    saved = save_model(tmp_path / "again.pt", model.network, model.card)
    written = json.loads(saved.with_suffix(".json").read_text())
    assert written["colour"] == {"of": "the day"} and written["threshold"] == 0.3
    assert list(written)[-1] == "colour"  # after the known fields


def test_detect_with_a_hostile_card_fails_in_one_line(model_file, tmp_path, capsys):
    _with_card(model_file, localisation={"radius": 100000})
    write_tiff(tmp_path / "image.tif", np.zeros((32, 32), np.float32))
    code = main(["detect", str(tmp_path / "image.tif"), "--model", str(model_file),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err
    assert "hostile.json: bad model card: localisation.radius" in err
    assert not (tmp_path / "out").exists()


def test_bundled_cards_round_trip_unchanged():
    folder = resources.files("napari_denodet") / "models"
    names = bundled_models()
    assert names
    for name in names:
        text = (folder / f"{name}.json").read_text()
        card = ModelCard.from_dict(json.loads(text), name)
        assert card.to_dict() == json.loads(text)
        assert json.dumps(card.to_dict(), indent=2) + "\n" == text  # the order too
        assert ModelCard.from_dict(card.to_dict()) == card
        assert load_model(name).card == card


def test_a_card_reads_as_typed_fields_and_cannot_be_changed():
    card = load_model("micrograph").card
    assert card.threshold == 0.4 and card.invert is True and card.scenario == "micrograph"
    assert card.localisation.radius == 2 and card.particle_size.radius_px == (5.0, 15.0)
    assert card.binning == 1 and card.training_temperature == 1.0
    assert card.finetune["mode"] == "threshold" and not card.is_fine_tuned
    # The mapping view (for readers of the former dict card) is read-only too.
    assert card["training"]["settings"]["patch_size"] == 128
    with pytest.raises(TypeError, match="read-only"):
        card["training"]["binning"] = 2
    with pytest.raises(TypeError, match="read-only"):
        card.training["settings"]["snr_range"].append(1.0)
    with pytest.raises(AttributeError):
        card.threshold = 0.9
    changed = card.updated(threshold=0.6, finetune=None)
    assert changed.threshold == 0.6 and changed.finetune is None and card.threshold == 0.4
    with pytest.raises(InputError, match="threshold must be a number"):
        card.updated("edited.json", threshold=1.5)
    assert pickle.loads(pickle.dumps(card)) == card


def test_a_partial_card_takes_the_defaults():
    model = Model(network=None, card={"localisation": {"temperature": 0.6}}, source="a")
    assert model.localisation == {"radius": 2, "temperature": 0.6, "min_distance": 3,
                                  "merge_ratio": 0.0}
    assert model.threshold == 0.5 and model.invert is False and model.binning == 1
    with pytest.raises(InputError, match=r"^b: bad model card: localisation.radius"):
        Model(network=None, card={"localisation": {"radius": 0}}, source="b")
