import json

import numpy as np
import pytest
import torch

from napari_denodet.core.errors import InputError
from napari_denodet.core.models import (
    CARD_FIELDS,
    bundled_models,
    load_model,
    save_model,
)
from napari_denodet.core.network import Denodet, NetworkConfig
from napari_denodet.core.train import DEVIATIONS


def _net(seed=0):
    torch.manual_seed(seed)
    return Denodet(NetworkConfig(widths=(4, 8, 8))).eval()


def test_save_then_load_gives_the_same_network_and_card(tmp_path):
    net = _net()
    path = save_model(tmp_path / "mine.pt", net, {"name": "mine", "threshold": 0.4,
                                                  "extra": 1})
    card = json.loads(path.with_suffix(".json").read_text())
    assert set(CARD_FIELDS) <= set(card) and card["extra"] == 1
    model = load_model(path)
    assert model.threshold == 0.4 and model.invert is False
    x = torch.randn(1, 1, 24, 28)
    with torch.no_grad():
        for a, b in zip(net(x), model.network(x), strict=True):
            assert torch.equal(a, b)
    assert not model.network.training


def test_card_travels_inside_the_weights_when_the_json_is_lost(tmp_path):
    path = save_model(tmp_path / "m.pt", _net(), {"name": "m", "threshold": 0.7})
    path.with_suffix(".json").unlink()
    assert load_model(path).threshold == 0.7


def test_saving_never_overwrites_unless_asked(tmp_path):
    path = save_model(tmp_path / "m.pt", _net(0), {"name": "a"})
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        save_model(path, _net(1), {"name": "b"})
    assert path.read_bytes() == before
    save_model(path, _net(1), {"name": "b"}, overwrite=True)
    assert load_model(path).card["name"] == "b"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not a torch file", "not a readable model file"),
        (None, "not a napari-denodet model"),
    ],
)
def test_corrupt_or_foreign_files_give_a_clear_error(tmp_path, content, needle):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weight": torch.zeros(3)}, path)  # someone else's checkpoint
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=needle) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = save_model(tmp_path / "m.pt", _net(), {"name": "m"})
    payload = torch.load(path, weights_only=True)
    payload["config"]["widths"] = [8, 16, 32]
    torch.save(payload, path)
    with pytest.raises(InputError, match="do not fit"):
        load_model(path)


def test_unknown_name_lists_the_bundled_models():
    with pytest.raises(InputError, match="unknown model 'nosuchmodel'"):
        load_model("nosuchmodel")
    with pytest.raises(InputError, match="no such model file"):
        load_model("missing/model.pt")


def test_bundled_models_load_by_name_with_complete_cards():
    names = bundled_models()
    assert "fluorescence" in names
    for name in names:
        model = load_model(name)
        assert model.card["name"] == name
        assert set(CARD_FIELDS) <= set(model.card)
        assert model.card["training"]["command"].startswith("napari-denodet train")
        assert 0.05 <= model.threshold <= 0.95


def test_bundled_cards_commands_give_their_recorded_settings():
    # A changed default would otherwise make a card's command train another model.
    import shlex

    from napari_denodet.cli import build_parser, train_settings
    from napari_denodet.core.train import TrainSettings

    for name in bundled_models():
        training = load_model(name).card["training"]
        args = build_parser().parse_args(shlex.split(training["command"])[1:])
        assert args.out.name == f"{name}.pt"
        made, recorded = train_settings(args).to_dict(), training["settings"]
        assert {k: made[k] for k in recorded} == recorded
        # Fields added after a card was written sit at their defaults, as in that run.
        defaults = TrainSettings().to_dict()
        assert all(made[k] == defaults[k] for k in made.keys() - recorded.keys())


def test_bundled_cards_localisation_is_what_training_writes_today():
    # Retraining by the card's command must give the card's inference settings too.
    import shlex
    from types import SimpleNamespace

    from napari_denodet.cli import build_parser, train_settings
    from napari_denodet.core.train import model_card

    for name in bundled_models():
        card = load_model(name).card
        args = build_parser().parse_args(shlex.split(card["training"]["command"])[1:])
        settings = train_settings(args)
        result = SimpleNamespace(settings=settings, history=[], threshold=card["threshold"],
                                 wall_time=0.0)
        assert model_card(result, name, "")["localisation"] == card["localisation"]


@pytest.mark.parametrize(("snr", "least_f1"), [(2.0, 0.8), (7.0, 0.9), (30.0, 0.9)])
def test_bundled_fluorescence_model_finds_dim_and_bright_particles(snr, least_f1):
    # A model trained only up to SNR 10 found nothing at SNR 30: bright spots are real.
    from napari_denodet.core.metrics import score_detections
    from napari_denodet.core.predict import detect, run
    from napari_denodet.core.simulate import simulate_timelapse

    model = load_model("fluorescence")
    sim = simulate_timelapse("vesicle", snr=snr, density="mid", frames=1, shape=(192, 192),
                             seed=4_400_000_000)
    points = run(detect(sim.noisy, model.network, **model.localisation)).points
    kept = points[points.score >= model.threshold]
    assert len(sim.truth) > 50
    assert score_detections(kept, sim.truth).f1 > least_f1


def test_bundled_microtubule_model_localises_comets_better_than_the_general_one():
    # Why it ships (models.md, "One general model or one per scenario").
    from napari_denodet.core.metrics import score_detections
    from napari_denodet.core.predict import detect, run
    from napari_denodet.core.simulate import simulate_timelapse

    sim = simulate_timelapse("microtubule", snr=7, density="mid", frames=2, shape=(256, 256),
                             seed=4_400_000_001)
    scores = {}
    for name in ("microtubule", "fluorescence"):
        model = load_model(name)
        points = run(detect(sim.noisy, model.network, **model.localisation)).points
        scores[name] = score_detections(points[points.score >= model.threshold], sim.truth)
    assert len(sim.truth) > 100
    assert scores["microtubule"].f1 > 0.9
    assert scores["microtubule"].rmse < 0.8 * scores["fluorescence"].rmse


@pytest.mark.parametrize(("diameter", "binning"),
                         [(10.0, 1), (30.0, 2), (108.0, 6), (200.0, 12)])
def test_binning_brings_particles_to_the_trained_radius(diameter, binning):
    # The micrograph model was trained on radii of 5-15 px: middle sqrt(75) = 8.7 px.
    model = load_model("micrograph")
    assert model.bin_for_diameter(diameter) == binning
    radius = diameter / 2 / binning
    for other in (binning - 1, binning + 1):
        if other >= 1:  # no neighbouring bin is nearer on a log scale
            assert abs(np.log(radius / 75 ** 0.5)) <= abs(np.log(diameter / 2 / other
                                                                 / 75 ** 0.5))


def test_binning_needs_a_particle_size_and_a_positive_diameter():
    with pytest.raises(ValueError, match="records no particle radius"):
        load_model("fluorescence").bin_for_diameter(100.0)
    with pytest.raises(ValueError, match="must be positive"):
        load_model("micrograph").bin_for_diameter(0.0)


def _card_benchmarks_script():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "card_benchmarks.py"
    spec = importlib.util.spec_from_file_location("card_benchmarks", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_cards_carry_the_committed_benchmark_figures():
    # The card's benchmark field is what a user reads first: it must be the measured
    # figures of the committed reports, refreshed by scripts/card_benchmarks.py.
    card_benchmarks = _card_benchmarks_script()
    figures = card_benchmarks.card_figures()
    assert set(figures) == set(bundled_models())  # every bundled model was measured
    for name, benchmark in figures.items():
        card = load_model(name).card
        assert card["benchmark"] == benchmark
        if card["scenario"] != "micrograph":  # their deviations quote the same report
            assert card["deviations"] == DEVIATIONS
    per_snr = figures["fluorescence"]["per_snr"]
    assert set(per_snr) == {"1", "2", "4", "7"}
    assert all(0 < v["f1"] <= 1 and v["rmse_px"] > 0 for v in per_snr.values())


def test_bundled_cards_carry_the_advised_fine_tuning_mode():
    # The mode `auto` follows is the better one of the committed fine-tuning benchmark.
    advice = _card_benchmarks_script().finetune_advice()
    assert {"fluorescence", "micrograph"} <= set(advice)
    for name, field in advice.items():
        assert load_model(name).card["finetune"] == field
        figures = field["f1_10_clicks"]
        better = "threshold" if (figures["threshold"] or 0) > figures["weights"] else "weights"
        assert field["mode"] == better
        # The threshold after training: keeping the parent's count where that measured
        # higher, and the weights figure is the advised calibration's.
        count = figures["weights_keeping_parent_count"]
        clicks = figures["weights_threshold_from_clicks"]
        assert field["calibration"] == ("count" if (count or 0) > clicks else "clicks")
        assert figures["weights"] == (count if field["calibration"] == "count" else clicks)


def test_card_figures_are_means_over_the_cells_of_one_snr():
    card_benchmarks = _card_benchmarks_script()

    def cell(snr, f1, rmse):
        return {"snr": snr, "DENODET": {"f1": f1, "rmse": rmse, "psnr": 30.0,
                                        "f1_default": f1},
                "LoG": {"f1": f1 / 2}}

    report = {"rows": [cell(1.0, 0.4, 1.0), cell(1.0, 0.6, 2.0), cell(2.0, 0.9, 0.5)]}
    per_snr = card_benchmarks.detection_figures(report)["per_snr"]
    assert per_snr["1"] == {"f1": 0.5, "f1_default_threshold": 0.5, "rmse_px": 1.5,
                            "psnr_db": 30.0, "f1_log": 0.25, "cells": 2}
    assert per_snr["2"]["f1"] == 0.9 and per_snr["2"]["cells"] == 1


def test_training_temperature_is_read_from_the_training_record_not_the_localisation():
    from napari_denodet.core.models import Model

    trained = {"training": {"settings": {"temperature": 1.0}},
               "localisation": {"temperature": 0.6}}
    finetuned = {"training": {"settings": {"steps": 300}, "parent_training": {
        "settings": {"steps": 40}, "parent_training": trained["training"]}},
        "localisation": {"temperature": 0.6}}
    assert Model(network=None, card=trained, source="a").training_temperature == 1.0
    assert Model(network=None, card=finetuned, source="b").training_temperature == 1.0
    assert Model(network=None, card={}, source="c").training_temperature == 1.0
    assert load_model("fluorescence").localisation["temperature"] == 0.6
    assert load_model("fluorescence").training_temperature == 1.0


def test_bundled_timelapse_model_finds_dim_particles_one_frame_misses():
    # Reading the frames around each one: dim, slow particles stand out of the noise.
    from napari_denodet.core.metrics import score_detections
    from napari_denodet.core.predict import run
    from napari_denodet.core.simulate import simulate_timelapse

    timelapse, single = load_model("timelapse"), load_model("fluorescence")
    assert timelapse.window == 3 and single.window == 1
    sim = simulate_timelapse("vesicle", snr=1.5, density="mid", frames=8, shape=(192, 192),
                             seed=0)
    f1 = {name: score_detections(run(model.detect(sim.noisy)).points, sim.truth).f1
          for name, model in (("timelapse", timelapse), ("single", single))}
    assert f1["timelapse"] > f1["single"] + 0.05
