"""Model files: weights plus a model card, bundled with the package or chosen by path.

A model is two files side by side: ``NAME.pt`` (a ``torch.save`` of a dict with the
network configuration and its ``state_dict``) and ``NAME.json``, the model card. The
card says what the model is for and how it was made: a
:class:`~napari_denodet.core.card.ModelCard`, validated when the model loads;
:data:`CARD_FIELDS` lists the fields every card has. Bundled models live in
``napari_denodet/models`` and load by name through :mod:`importlib.resources`; nothing
is ever downloaded.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from napari_denodet.core.card import CARD_FIELDS, ModelCard
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import atomic_write

__all__ = ["CARD_FIELDS", "Model", "ModelCard", "bundled_model_purposes", "bundled_models",
           "load_model", "resolve_model_path", "save_model"]

_FORMAT = "napari-denodet-model/1"


@dataclass
class Model:
    """A loaded network with its card.

    Attributes
    ----------
    network : torch.nn.Module
        A :class:`~napari_denodet.core.network.Denodet` in eval mode, on the CPU.
    card : ModelCard
        The model card (a mapping of its JSON form given here is validated into one).
    source : str
        Where it came from (bundled name or file path).
    """

    network: object
    card: ModelCard
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.card, ModelCard):
            self.card = ModelCard.from_dict(self.card, self.source)

    @property
    def name(self) -> str:
        """The card's name, else where the model came from."""
        return self.card.name or self.source

    @property
    def threshold(self) -> float:
        """The calibrated default score threshold."""
        return self.card.threshold

    @property
    def localisation(self) -> dict:
        """Keyword arguments of :func:`~napari_denodet.core.predict.detect` it was calibrated with.

        Peak finding and local DSNT settings, and ``blob`` (the score's blob term) for a
        model whose threshold was recalibrated with one.
        """
        return self.card.localisation.to_dict()

    @property
    def training_temperature(self) -> float:
        """Softmax temperature its local DSNT loss terms were trained with.

        The card's ``localisation`` holds the temperature used at inference, which may
        differ; fine-tuning trains with this one. Read from the training settings (those
        of the first ancestor that records one, for a fine-tuned model), else 1.
        """
        return self.card.training_temperature

    @property
    def invert(self) -> bool:
        """Whether the model expects dark particles (they are inverted before it)."""
        return self.card.invert

    @property
    def scenario(self) -> str:
        """What data the model is for (``"fluorescence"``, ``"micrograph"``, ...)."""
        return self.card.scenario or ""

    @property
    def window(self) -> int:
        """Frames the network reads to detect in one: 1, or an odd window of a time-lapse.

        The window is centred on the frame detected in; the first and last frames of a
        stack, and single images, repeat themselves where neighbours are missing. It is
        the network's input channels (the card's ``network.in_channels``).
        """
        from napari_denodet.core.predict import network_window

        return network_window(self.network)

    @property
    def binning(self) -> int:
        """The bin factor a fine-tuned model was fine-tuned at (1 for others).

        :meth:`detect` bins by it unless told otherwise.
        """
        return self.card.binning

    def detect(
        self,
        image,
        *,
        threshold: float | None = None,
        binning: int | None = None,
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
        binning : int, optional
            Average ``binning x binning`` pixels first (micrographs); by default the
            model's :attr:`binning` (the one it was fine-tuned at, else 1).
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
            self, image, threshold=threshold,
            binning=self.binning if binning is None else binning, polarity=polarity,
            frames=frames, out=out, device=device, precision=precision,
            batch_size=batch_size))

    def finetune(
        self,
        image,
        positives,
        negatives=None,
        settings=None,
        *,
        binning: int = 1,
        name: str | None = None,
        files=None,
        stop=None,
        device: str = "auto",
    ):
        """Fine-tune on clicked particles: a generator of progress that returns the model.

        Binning, the run and the new card all happen in
        :func:`napari_denodet.core.finetune.finetune`; drain it with
        :func:`napari_denodet.core.predict.run` in a script. This model is not changed.

        Parameters
        ----------
        image : array_like
            ``(y, x)`` image or ``(t, y, x)`` stack at full resolution.
        positives, negatives : pandas.DataFrame or array_like
            Clicked particle centres and known false detections (optional), in the
            image's full-resolution pixels.
        settings : FinetuneSettings, optional
            The run (:class:`napari_denodet.core.finetune.FinetuneSettings`).
        binning : int
            Average ``binning x binning`` pixels first (micrographs); the new card
            records it and :meth:`detect` with the new model bins by it.
        name : str, optional
            The new model's name (default: this one's with ``-finetuned``).
        files : FinetuneFiles, optional
            The files a command line read and writes: the card then records the
            command that repeats the run.
        stop : threading.Event, optional
            When set, training ends after the current step; the model so far is kept.
        device : str
            Where to train.

        Yields
        ------
        napari_denodet.core.finetune.FinetuneProgress

        Returns
        -------
        napari_denodet.core.finetune.FinetunedModel
        """
        from napari_denodet.core.finetune import finetune

        return (yield from finetune(self, image, positives, negatives, settings, stop=stop,
                                    device=device, binning=binning, name=name, files=files))

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
        size = self.card.particle_size
        radii = None if size is None else size.radius_px
        if radii is None:
            raise ValueError(f"model {self.name} records no particle radius; give the "
                             "binning instead")
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
            card = ModelCard.from_dict(json.loads(card_path.read_text()), card_path)
        except (OSError, json.JSONDecodeError, InputError):
            card = ModelCard()
        purposes[name] = str((card.training or {}).get("data") or "")
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
            card = ModelCard.from_dict(json.loads(card_path.read_text()), card_path)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(card_path, f"the model card is not valid JSON ({reason})") from None
    else:  # the copy saved inside the weights
        card = ModelCard.from_dict(payload.get("card") or {}, path)
    return Model(network=network, card=card, source=os.fspath(name_or_path))


def save_model(path: str | os.PathLike, network, card: ModelCard | dict,
               overwrite: bool = False, *, name: str | None = None) -> Path:
    """Save a network and its card as ``path`` (``.pt``) and ``path`` with ``.json``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination of the weights; the card goes beside it.
    network : Denodet
        The network (its config is saved with the weights and in the card).
    card : ModelCard or dict
        The model card, or its JSON form (validated; missing fields take their
        defaults, :meth:`ModelCard.to_dict` writes every field of :data:`CARD_FIELDS`).
    overwrite : bool
        Replace existing files.
    name : str, optional
        The model's name in the saved card (default: the card's).

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
    card_path = path.with_suffix(".json")
    if not isinstance(card, ModelCard):
        card = ModelCard.from_dict(card, card_path)
    card = card.updated(card_path, name=card.name if name is None else name,
                        version=card.version or __version__,
                        network=network.config.to_dict()).to_dict()
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    payload = {"format": _FORMAT, "config": network.config.to_dict(), "state_dict": state,
               "card": card}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if not overwrite and card_path.exists():
        raise InputError(card_path, "already exists; choose another name or allow "
                                    "overwriting (--overwrite)")
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()), overwrite)
    atomic_write(card_path, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"),
                 overwrite=True)
    return path
