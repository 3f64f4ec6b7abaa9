"""Models made in this napari session (fine-tuned, not yet saved), shared by the widgets.

The Fine-tune widget adds a model here; the Detect widget lists these names before the
bundled models and runs the model object itself, so an unsaved model is usable at once.
"""

from __future__ import annotations

_MODELS: dict[str, object] = {}


def add(model) -> str:
    """Keep a model under a new name ("<card name> (session N)") and return the name."""
    base = model.card.name or "fine-tuned"
    name = f"{base} (session {len(_MODELS) + 1})"
    _MODELS[name] = model
    return name


def get(name) -> object | None:
    """Return the model kept under ``name``, or None."""
    return _MODELS.get(name) if isinstance(name, str) else None


def name_of(model) -> str | None:
    """Return the name ``model`` (the object itself) is kept under, or None."""
    return next((name for name, kept in _MODELS.items() if kept is model), None)


def names() -> list[str]:
    """Names of this session's models, newest first."""
    return list(reversed(_MODELS))
