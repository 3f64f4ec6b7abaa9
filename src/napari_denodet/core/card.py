"""The model card, typed and validated: :class:`ModelCard`.

A card is read from JSON written by anyone, so :meth:`ModelCard.from_dict` checks every
field the code reads (types and ranges) and raises a one-line
:class:`~napari_denodet.core.errors.InputError` naming the card and the field, before a
bad value can become an internal error or a giant allocation. :meth:`ModelCard.to_dict`
is the one place a card becomes JSON again.

Fields the code reads are typed (``threshold``, ``invert``, ``localisation``,
``particle_size``, ...). The free-form records (``training``, ``network``,
``benchmark``, ``deviations``, ``parent``, ``finetune``) stay JSON, read-only
(:class:`ReadOnlyDict`, :class:`ReadOnlyList`); only the few keys in them that the code
reads are checked (``training.binning``, the training temperature). Top-level keys this
version does not know are kept in ``extra`` and written back unchanged.

A card is immutable: :meth:`ModelCard.updated` returns a validated copy with some
fields replaced. For readers written against the former dict card it is also a
read-only mapping of its JSON form (``card["training"]["command"]``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_denodet.core.errors import InputError

#: Fields of every model card, in the order a card is written (one definition for the
#: CLI, the widgets and the docs).
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
#: A card field written only when present: the fine-tuning mode and calibration the
#: fine-tuning benchmark measured better for this model (``"auto"`` follows it).
OPTIONAL_FIELDS = ("finetune",)
#: Largest values a card may set (larger ones are refused as corrupt or hostile).
MAX_RADIUS = 10          # localisation.radius: DSNT window half-width, px
MAX_MIN_DISTANCE = 20    # localisation.min_distance: peak separation, px
MAX_BLOB_SIGMA = 20.0    # localisation.blob.sigma: blob filter width, px
MAX_SIZE_PX = 1000.0     # particle_size ranges
MAX_BINNING = 64         # training.binning
#: What a missing localisation field means (the settings every bundled model used
#: before the card recorded them).
LOCALISATION_DEFAULTS = {"radius": 2, "temperature": 1.0, "min_distance": 3,
                         "merge_ratio": 0.0}
_BLOB_FIELDS = ("weight", "sigma", "centre", "scale")
#: The size ranges the code knows: a value other than null must be a range.
_SIZE_RANGES = ("radius_px", "psf_sigma_px", "comet_length_factor")


class ReadOnlyDict(dict):
    """A JSON object of a card: a dict that refuses changes (``TypeError``)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("model cards are read-only; build a new one with "
                        "ModelCard.updated")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return (type(self), (dict(self),))


class ReadOnlyList(list):
    """A JSON array of a card: a list that refuses changes (``TypeError``)."""

    _refuse = ReadOnlyDict._refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = reverse = sort = clear = _refuse

    def __reduce__(self):
        return (type(self), (list(self),))


class _Invalid(Exception):
    # A bad field: where it is (dotted path) and what is wrong; becomes an InputError.
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")


def _shown(value: Any) -> str:
    # A value in an error message, kept to one short line.
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _json(value: Any, where: str) -> Any:
    # A JSON value, made read-only (numpy scalars become Python ones); anything else is
    # refused.
    if isinstance(value, np.generic) and np.ndim(value) == 0:
        value = value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise _Invalid(where, f"has a key that is not a string: {_shown(key)}")
        return ReadOnlyDict({k: _json(v, f"{where}.{k}") for k, v in value.items()})
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return ReadOnlyList(_json(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise _Invalid(where, f"must be JSON (object, array, string, number), got "
                          f"{type(value).__name__}")


def _plain(value: Any) -> Any:
    # The JSON form as plain dicts and lists (fresh copies, free to change).
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _mapping(value: Any, where: str) -> ReadOnlyDict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Invalid(where, f"must be a JSON object or null, got {_shown(value)}")
    return _json(value, where)


def _array(value: Any, where: str) -> ReadOnlyList | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise _Invalid(where, f"must be a JSON array or null, got {_shown(value)}")
    return _json(value, where)


def _text(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Invalid(where, f"must be a string or null, got {_shown(value)}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, where: str, low: float, high: float = math.inf, *,
            low_open: bool = False, integer: bool = False) -> float:
    # A finite number (an integer if asked) in [low, high] (low excluded if low_open).
    kind = "an integer" if integer else "a number"
    if high == math.inf:
        bounds = f"{'>' if low_open else '>='} {low:g}"
    else:
        bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    if (not _is_number(value) or (integer and not isinstance(value, int))
            or not math.isfinite(value) or value < low or (low_open and value == low)
            or value > high):
        raise _Invalid(where, f"must be {kind} {bounds}, got {_shown(value)}")
    return value


@dataclass(frozen=True)
class Localisation:
    """How a model's detections are localised and scored (the card's ``localisation``).

    Attributes
    ----------
    radius : int
        Half-width (px) of the local DSNT window, 1 to :data:`MAX_RADIUS`.
    temperature : float
        Softmax temperature of the local DSNT at inference, > 0.
    min_distance : int
        Least distance (px) between peaks, 1 to :data:`MAX_MIN_DISTANCE`.
    merge_ratio : float
        Shallow double peaks merged, in [0, 1] (0: none).
    blob : ReadOnlyDict, optional
        The score's blob term, the fields of
        :class:`~napari_denodet.core.localize.BlobScore`; None for the peak probability.
    """

    radius: int = LOCALISATION_DEFAULTS["radius"]
    temperature: float = LOCALISATION_DEFAULTS["temperature"]
    min_distance: int = LOCALISATION_DEFAULTS["min_distance"]
    merge_ratio: float = LOCALISATION_DEFAULTS["merge_ratio"]
    blob: ReadOnlyDict | None = None

    @classmethod
    def _parse(cls, value: Any) -> Localisation:
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise _Invalid("localisation", f"must be a JSON object, got {_shown(value)}")
        known = (*LOCALISATION_DEFAULTS, "blob")
        for key in value:
            if key not in known:
                raise _Invalid(f"localisation.{key}", f"is not a localisation setting "
                                                      f"({', '.join(known)})")
        given = {**LOCALISATION_DEFAULTS, **value}
        return cls(
            radius=_number(given["radius"], "localisation.radius", 1, MAX_RADIUS,
                           integer=True),
            temperature=float(_number(given["temperature"], "localisation.temperature", 0,
                                      low_open=True)),
            min_distance=_number(given["min_distance"], "localisation.min_distance", 1,
                                 MAX_MIN_DISTANCE, integer=True),
            merge_ratio=float(_number(given["merge_ratio"], "localisation.merge_ratio",
                                      0, 1)),
            blob=_blob(given.get("blob")))

    def to_dict(self) -> dict:
        """Return the card's JSON form (``blob`` only when there is one)."""
        out = {"radius": self.radius, "temperature": self.temperature,
               "min_distance": self.min_distance, "merge_ratio": self.merge_ratio}
        if self.blob is not None:
            out["blob"] = _plain(self.blob)
        return out


def _blob(value: Any) -> ReadOnlyDict | None:
    if value is None:
        return None
    where = "localisation.blob"
    if not isinstance(value, Mapping):
        raise _Invalid(where, f"must be a JSON object or null, got {_shown(value)}")
    for key in value:
        if key not in _BLOB_FIELDS:
            raise _Invalid(f"{where}.{key}", f"is not a blob score field "
                                             f"({', '.join(_BLOB_FIELDS)})")
    if "weight" not in value:
        raise _Invalid(f"{where}.weight", "is missing")
    limits = {"weight": (0, 1, False), "sigma": (0, MAX_BLOB_SIGMA, True),
              "centre": (-math.inf, math.inf, False), "scale": (0, math.inf, True)}
    for key, number in value.items():
        low, high, low_open = limits[key]
        _number(number, f"{where}.{key}", low, high, low_open=low_open)
    return _json(value, where)


@dataclass(frozen=True)
class ParticleSize:
    """The particle sizes a model was trained on (the card's ``particle_size``).

    Every numeric entry is a range of sizes, ``[low, high]`` (or one number), positive,
    finite and at most :data:`MAX_SIZE_PX`: ``radius_px`` for micrograph models (what
    :meth:`~napari_denodet.core.models.Model.bin_for_diameter` reads), ``psf_sigma_px``
    and ``comet_length_factor`` for fluorescence models. Other entries are kept as JSON.

    Attributes
    ----------
    entries : ReadOnlyDict
        The card's ``particle_size`` object.
    """

    entries: ReadOnlyDict = field(default_factory=ReadOnlyDict)

    @classmethod
    def _parse(cls, value: Any) -> ParticleSize | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _Invalid("particle_size", f"must be a JSON object or null, got "
                                            f"{_shown(value)}")
        for key, entry in value.items():
            where = f"particle_size.{key}"
            numbers = entry if isinstance(entry, (list, tuple)) else [entry]
            if entry is None or (key not in _SIZE_RANGES
                                 and not any(_is_number(n) for n in numbers)):
                continue  # not a size range: kept as it is
            if not 1 <= len(numbers) <= 2:
                raise _Invalid(where, f"must be a number or a [low, high] range, got "
                                      f"{_shown(entry)}")
            for number in numbers:
                _number(number, where, 0, MAX_SIZE_PX, low_open=True)
            if numbers[0] > numbers[-1]:
                raise _Invalid(where, f"must be a [low, high] range, got {_shown(entry)}")
        return cls(_json(value, "particle_size"))

    def range(self, name: str) -> tuple[float, float] | None:
        """Return the ``(low, high)`` size range ``name``, or None when the card has none."""
        entry = self.entries.get(name)
        numbers = entry if isinstance(entry, list) else [entry]
        if not numbers or not all(_is_number(n) for n in numbers):
            return None
        return float(numbers[0]), float(numbers[-1])

    @property
    def radius_px(self) -> tuple[float, float] | None:
        """The range of particle radii (px) trained on, or None."""
        return self.range("radius_px")

    def to_dict(self) -> dict:
        """Return the card's JSON form."""
        return _plain(self.entries)


@dataclass(frozen=True, eq=False)
class ModelCard(Mapping):
    """What a model is for and how it was made; see :data:`CARD_FIELDS`.

    Build one with :meth:`from_dict` (validated); write it with :meth:`to_dict`. The
    instance is also a read-only mapping of :meth:`to_dict`'s form, for readers of the
    former dict card.

    Attributes
    ----------
    name, version, scenario, normalisation : str or None
        Short name, the napari-denodet version that wrote it, the data it is for
        (``"fluorescence"``, ``"micrograph"``, ...), and how frames are normalised.
    threshold : float
        The calibrated default score threshold, in [0, 1].
    invert : bool
        Whether particles are darker than the background (inverted before the network).
    localisation : Localisation
        Peak finding, local DSNT and the blob score term.
    particle_size : ParticleSize or None
        The particle sizes trained on.
    training, network, benchmark, parent, finetune : ReadOnlyDict or None
        How it was trained (data, command, settings, ...; ``binning`` for a fine-tuned
        model, ``parent_training`` its parent's record), the network configuration,
        measured figures, the model it was fine-tuned from, and the fine-tuning advice.
    deviations : ReadOnlyList or None
        Where it departs from the paper, and why.
    extra : ReadOnlyDict
        Top-level fields this version does not know, kept and written back unchanged.
    """

    name: str | None = None
    version: str | None = None
    scenario: str | None = None
    training: ReadOnlyDict | None = None
    normalisation: str | None = None
    invert: bool = False
    particle_size: ParticleSize | None = None
    threshold: float = 0.5
    localisation: Localisation = field(default_factory=Localisation)
    network: ReadOnlyDict | None = None
    benchmark: ReadOnlyDict | None = None
    deviations: ReadOnlyList | None = None
    parent: ReadOnlyDict | None = None
    finetune: ReadOnlyDict | None = None
    extra: ReadOnlyDict = field(default_factory=ReadOnlyDict)

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike | None = None) -> ModelCard:
        """Validate a card's JSON form and return the card.

        Parameters
        ----------
        data : Mapping
            The card as read from JSON. Missing fields take their defaults (threshold
            0.5, no inversion, :data:`LOCALISATION_DEFAULTS`).
        source : str or os.PathLike, optional
            The card's file (or the model's), named in errors.

        Returns
        -------
        ModelCard

        Raises
        ------
        InputError
            One line naming ``source`` and the field that is wrong.
        """
        try:
            return cls._parse(data)
        except _Invalid as invalid:
            raise InputError(source, f"bad model card: {invalid}") from None

    @classmethod
    def _parse(cls, data: Any) -> ModelCard:
        if not isinstance(data, Mapping):
            raise _Invalid("the card", f"must be a JSON object, got {_shown(data)}")
        invert = data.get("invert")
        if invert is not None and not isinstance(invert, bool):
            raise _Invalid("invert", f"must be true or false, got {_shown(invert)}")
        threshold = data.get("threshold")
        training = _mapping(data.get("training"), "training")
        known = (*CARD_FIELDS, *OPTIONAL_FIELDS)
        card = cls(
            name=_text(data.get("name"), "name"),
            version=_text(data.get("version"), "version"),
            scenario=_text(data.get("scenario"), "scenario"),
            training=training,
            normalisation=_text(data.get("normalisation"), "normalisation"),
            invert=bool(invert),
            particle_size=ParticleSize._parse(data.get("particle_size")),
            threshold=0.5 if threshold is None else float(
                _number(threshold, "threshold", 0, 1)),
            localisation=Localisation._parse(data.get("localisation")),
            network=_mapping(data.get("network"), "network"),
            benchmark=_mapping(data.get("benchmark"), "benchmark"),
            deviations=_array(data.get("deviations"), "deviations"),
            parent=_mapping(data.get("parent"), "parent"),
            finetune=_mapping(data.get("finetune"), "finetune"),
            extra=_json({k: v for k, v in data.items() if k not in known}, "the card"))
        _check_training(training)
        return card

    def updated(self, source: str | os.PathLike | None = None, **fields: Any) -> ModelCard:
        """Return a copy with ``fields`` replaced (their JSON form), validated.

        Parameters
        ----------
        source : str or os.PathLike, optional
            Named in errors.
        **fields
            Card fields and their new JSON values (``localisation={"radius": 3, ...}``,
            ``training={...}``, ``finetune=None``).

        Returns
        -------
        ModelCard
        """
        return ModelCard.from_dict({**self.to_dict(), **fields}, source)

    def to_dict(self) -> dict:
        """Return the card's JSON form: :data:`CARD_FIELDS` in order, then the others.

        Plain dicts and lists (fresh copies); ``finetune`` only when present, then the
        unknown fields kept in ``extra``.
        """
        out = {
            "name": self.name,
            "version": self.version,
            "scenario": self.scenario,
            "training": _plain(self.training),
            "normalisation": self.normalisation,
            "invert": self.invert,
            "particle_size": None if self.particle_size is None else (
                self.particle_size.to_dict()),
            "threshold": self.threshold,
            "localisation": self.localisation.to_dict(),
            "network": _plain(self.network),
            "benchmark": _plain(self.benchmark),
            "deviations": _plain(self.deviations),
            "parent": _plain(self.parent),
        }
        if self.finetune is not None:
            out["finetune"] = _plain(self.finetune)
        out.update(_plain(self.extra))
        return out

    # The facts read from the free-form records.

    @property
    def binning(self) -> int:
        """The bin factor the model was fine-tuned at (``training.binning``), else 1."""
        return int((self.training or {}).get("binning") or 1)

    @property
    def training_temperature(self) -> float:
        """Softmax temperature of the local DSNT loss terms in training.

        Read from the training settings (those of the first ancestor that records one,
        for a fine-tuned model), else 1.
        """
        for training in _training_chain(self.training):
            temperature = (training.get("settings") or {}).get("temperature")
            if temperature is not None:
                return float(temperature)
        return 1.0

    @property
    def is_fine_tuned(self) -> bool:
        """Whether the card names a parent (fine-tuned or recalibrated from it)."""
        return bool(self.parent)

    @property
    def fitted_threshold(self) -> bool:
        """Whether the threshold was fitted to clicks, for detection to keep.

        A fine-tuned model whose trained weights failed the acceptance check
        (``training.accepted`` false) holds its parent's weights and detects as the
        parent does, with a threshold chosen per image.
        """
        return self.is_fine_tuned and (self.training or {}).get("accepted", True) is not False

    # The read-only mapping of the JSON form.

    def __getitem__(self, key: str) -> Any:
        return _json(self.to_dict()[key], key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_dict() == _plain(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return (ModelCard.from_dict, (self.to_dict(),))


def _training_chain(training: Mapping | None) -> Iterator[Mapping]:
    # A card's training record, then its parent's, and so on.
    while training:
        yield training
        training = training.get("parent_training")


def _check_training(training: Mapping | None) -> None:
    # The few keys of the training records that the code reads.
    if training is None:
        return
    binning = training.get("binning")
    if binning is not None:
        _number(binning, "training.binning", 1, MAX_BINNING, integer=True)
    where = "training"
    for record in _training_chain(training):
        for key in ("settings", "parent_training"):
            if record.get(key) is not None and not isinstance(record[key], Mapping):
                raise _Invalid(f"{where}.{key}", f"must be a JSON object or null, got "
                                                 f"{_shown(record[key])}")
        temperature = (record.get("settings") or {}).get("temperature")
        if temperature is not None:
            _number(temperature, f"{where}.settings.temperature", 0, low_open=True)
        where += ".parent_training"
