"""Sample data for napari's File > Open Sample, generated on demand by the core simulator.

Each sample comes with its ground truth as a Points layer, so a user (or a test) can
see at once how well a detection matches.
"""

from __future__ import annotations

from napari_denodet.core.points import coordinates
from napari_denodet.core.simulate import simulate_micrograph, simulate_timelapse


def _truth_layer(sim, name: str) -> tuple:
    features = {c: sim.truth[c].to_numpy() for c in sim.truth.columns if c not in ("y", "x")}
    return (
        coordinates(sim.truth),
        {"name": name, "features": features, "size": 6, "face_color": "transparent",
         "border_color": "lime", "visible": False},
        "points",
    )


def _timelapse_sample(scenario: str, label: str) -> list[tuple]:
    sim = simulate_timelapse(scenario, snr=4.0, density="mid", frames=20, shape=(256, 256),
                             seed=2026)
    return [
        (sim.noisy, {"name": f"{label} (simulated)", "colormap": "gray"}, "image"),
        _truth_layer(sim, f"{label} truth"),
    ]


def vesicle_timelapse() -> list[tuple]:
    """Return a simulated vesicle time-lapse (SNR 4, mid density) and its truth."""
    return _timelapse_sample("vesicle", "vesicles")


def comet_timelapse() -> list[tuple]:
    """Return a simulated microtubule plus-end comet time-lapse (SNR 4) and its truth."""
    return _timelapse_sample("microtubule", "comets")


def micrograph() -> list[tuple]:
    """Return a simulated binned cryo-EM micrograph and its particle centres."""
    sim = simulate_micrograph(shape=(768, 768), snr=0.2, density="mid", radius=10.0,
                              seed=2026)
    return [
        (sim.noisy, {"name": "micrograph (simulated)", "colormap": "gray"}, "image"),
        _truth_layer(sim, "micrograph truth"),
    ]
