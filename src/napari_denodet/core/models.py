"""Model files: weights plus a model card, bundled with the package or chosen by path.

A model is two files side by side: ``NAME.pt`` (a ``torch.save`` of a dict with the
network configuration and its ``state_dict``) and ``NAME.json``, the model card. The
card says what the model is for and how it was made; :data:`CARD_FIELDS` lists the
fields every card has. Bundled models live in ``napari_denodet/models`` and load by
name through :mod:`importlib.resources`; nothing is ever downloaded.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from napari_denodet.core.errors import InputError
from napari_denodet.core.io import atomic_write

#: Fields of every model card (one definition for the CLI, the widgets and the docs).
CARD_FIELDS = (
    "name",            # short name, e.g. "fluorescence"
    "version",         # napari-denodet version that wrote it
    "scenario",        # what data it is for
    "training",        # data, command, steps, seed, wall time
    "normalisation",   # how frames are normalised before the network ("median-mad")
    "invert",          # particles darker than background (cryo-EM)
    "particle_size",   # the particle sizes (px) it was trained for
    "threshold",       # calibrated default score threshold
    "localisation",    # local DSNT window and temperature; blob score term, if any
    "network",         # NetworkConfig as a dict
    "benchmark",       # measured figures (F1/RMSE per SNR), filled by the benchmark
    "deviations",      # where it departs from the paper, and why
    "parent",          # the model it was fine-tuned from, or null
)
_FORMAT = "napari-denodet-model/1"


@dataclass
class Model:
    """A loaded network with its card.

    Attributes
    ----------
    network : torch.nn.Module
        A :class:`~napari_denodet.core.network.Denodet` in eval mode, on the CPU.
    card : dict
        The model card.
    source : str
        Where it came from (bundled name or file path).
    """

    network: object
    card: dict
    source: str

    @property
    def threshold(self) -> float:
        """The calibrated default score threshold."""
        return float(self.card.get("threshold", 0.5))

    @property
    def localisation(self) -> dict:
        """Keyword arguments of :func:`~napari_denodet.core.predict.detect` it was calibrated with.

        Peak finding and local DSNT settings, and ``blob`` (the score's blob term) for a
        model whose threshold was recalibrated with one.
        """
        settings = {"radius": 2, "temperature": 1.0, "min_distance": 3, "merge_ratio": 0.0}
        settings.update(self.card.get("localisation") or {})
        return settings

    @property
    def training_temperature(self) -> float:
        """Softmax temperature its local DSNT loss terms were trained with.

        The card's ``localisation`` holds the temperature used at inference, which may
        differ; fine-tuning trains with this one. Read from the training settings (those
        of the first ancestor that records one, for a fine-tuned model), else 1.
        """
        training = self.card.get("training") or {}
        while training:
            temperature = (training.get("settings") or {}).get("temperature")
            if temperature is not None:
                return float(temperature)
            training = training.get("parent_training") or {}
        return 1.0

    @property
    def invert(self) -> bool:
        """Whether the model expects dark particles (they are inverted before it)."""
        return bool(self.card.get("invert", False))

    @property
    def scenario(self) -> str:
        """What data the model is for (``"fluorescence"``, ``"micrograph"``, ...)."""
        return str(self.card.get("scenario") or "")

    def detect(
        self,
        image,
        *,
        threshold: float | None = None,
        binning: int = 1,
        polarity: str | None = None,
        frames=None,
        out=None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
    ):
        """Detect particles: a generator of progress that returns the detections.

        Binning, the engine, probabilities, the polarity, the threshold and the mapping
        back to full-resolution pixels all happen here
        (:func:`napari_denodet.core.detection.detect_with_model`); drain it with
        :func:`napari_denodet.core.predict.run` in a script.

        Parameters
        ----------
        image : array_like
            ``(y, x)`` image or ``(t, y, x)`` stack, read batch by batch.
        threshold : float, optional
            Probability threshold; by default the one that maximises the expected F1
            on this image (a fine-tuned model keeps the threshold fitted to its clicks).
        binning : int
            Average ``binning x binning`` pixels first (micrographs).
        polarity : {"auto", "dark", "bright"}, optional
            The particles' polarity; by default the model's, and for micrograph models
            chosen per image (``"auto"``).
        frames : (int, int), optional
            ``(start, stop)`` range of a stack's frames.
        out : array_like, optional
            Where the denoised (binned) frames go, as for the engine.
        device, precision : str
            Where and in which arithmetic the network runs.
        batch_size : int, optional
            Frames (or tiles) per forward pass.

        Yields
        ------
        napari_denodet.core.predict.DetectProgress
            After every forward pass.

        Returns
        -------
        napari_denodet.core.detection.Detections
        """
        from napari_denodet.core.detection import detect_with_model

        return (yield from detect_with_model(
            self, image, threshold=threshold, binning=binning, polarity=polarity,
            frames=frames, out=out, device=device, precision=precision,
            batch_size=batch_size))

    def bin_for_diameter(self, diameter: float) -> int:
        """Return the binning that brings particles of ``diameter`` px to the trained size.

        The card's ``particle_size.radius_px`` is the range of radii the model was
        trained on; the bin maps the particle radius closest (on a log scale) to the
        middle of that range, ``sqrt(low x high)`` (8.7 px for 5-15 px).

        Parameters
        ----------
        diameter : float
            Particle diameter in full-resolution pixels.

        Returns
        -------
        int
            The bin factor, at least 1.

        Raises
        ------
        ValueError
            The diameter is not positive, or the card records no particle radius (a
            fluorescence model: set the bin by hand, usually 1).
        """
        radii = (self.card.get("particle_size") or {}).get("radius_px")
        if not radii:
            raise ValueError(f"model {self.card.get('name') or self.source} records no "
                             "particle radius; give the binning instead")
        if not math.isfinite(diameter) or diameter <= 0:
            raise ValueError(f"particle diameter must be positive, got {diameter:g}")
        middle = math.sqrt(radii[0] * radii[-1])
        best = max(1, int(diameter / 2 / middle))
        # The larger of the two neighbouring integers if it is nearer on a log scale.
        if abs(math.log(diameter / 2 / (best + 1) / middle)) < abs(
                math.log(diameter / 2 / best / middle)):
            best += 1
        return best


def bundled_models() -> list[str]:
    """Return the names of the models shipped inside the package."""
    folder = resources.files("napari_denodet") / "models"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-3] for p in folder.iterdir() if p.name.endswith(".pt"))


def bundled_model_purposes() -> dict[str, str]:
    """Return what each bundled model was trained on, from its card (no weights loaded).

    Returns
    -------
    dict
        Bundled name -> the card's training data, e.g. ``"simulated binned cryo-EM
        micrographs"``; an empty string where the card says nothing.
    """
    purposes = {}
    for name in bundled_models():
        card_path = _bundled_path(name).with_suffix(".json")
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError):
            card = {}
        purposes[name] = str((card.get("training") or {}).get("data") or "")
    return purposes


def _bundled_path(name: str) -> Path:
    return Path(str(resources.files("napari_denodet") / "models" / f"{name}.pt"))


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """Turn a bundled model name or a file path into the path of its weights file."""
    text = os.fspath(name_or_path)
    if text in bundled_models():
        return _bundled_path(text)
    path = Path(text)
    if path.suffix == "" and not path.exists():
        known = ", ".join(bundled_models()) or "none bundled"
        raise InputError(None, f"unknown model '{text}' (bundled: {known}; or give a .pt path)")
    return path


def load_model(name_or_path: str | os.PathLike) -> Model:
    """Load a bundled model by name or a model file by path.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A name from :func:`bundled_models` or the path of a ``.pt`` model file (its card
        ``.json`` beside it).

    Returns
    -------
    Model
        The network in eval mode and its card.

    Raises
    ------
    InputError
        When the file is missing, corrupt, or not a napari-denodet model.
    """
    import torch

    from napari_denodet.core.network import NetworkConfig, build_network

    path = resolve_model_path(name_or_path)
    if not path.is_file():
        raise InputError(path, "no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable model file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise InputError(path, "not a napari-denodet model (no model format marker)")
    try:
        network = build_network(NetworkConfig.from_dict(payload["config"]))
        network.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise InputError(path, f"the weights do not fit the network ({exc})") from None
    network.eval()
    card_path = path.with_suffix(".json")
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(card_path, f"the model card is not valid JSON ({exc})") from None
    else:
        card = dict(payload.get("card") or {})
    return Model(network=network, card=card, source=os.fspath(name_or_path))


def save_model(path: str | os.PathLike, network, card: dict, overwrite: bool = False) -> Path:
    """Save a network and its card as ``path`` (``.pt``) and ``path`` with ``.json``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination of the weights; the card goes beside it.
    network : Denodet
        The network (its config is saved with the weights).
    card : dict
        The model card; missing fields of :data:`CARD_FIELDS` are added as null.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    pathlib.Path
        The weights path.
    """
    import torch

    from napari_denodet import __version__

    path = Path(path)
    if path.suffix != ".pt":
        raise InputError(path, "model files end in .pt")
    card = {name: card.get(name) for name in CARD_FIELDS} | {
        k: v for k, v in card.items() if k not in CARD_FIELDS}
    card["version"] = card.get("version") or __version__
    card["network"] = network.config.to_dict()
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    payload = {"format": _FORMAT, "config": network.config.to_dict(), "state_dict": state,
               "card": card}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    card_path = path.with_suffix(".json")
    if not overwrite and card_path.exists():
        raise InputError(card_path, "already exists; choose another name or allow "
                                    "overwriting (--overwrite)")
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()), overwrite)
    atomic_write(card_path, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"),
                 overwrite=True)
    return path
