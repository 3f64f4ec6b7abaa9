"""Copy a trained model into the package under a bundled name.

Usage::

    .venv/bin/python scripts/bundle_model.py runs/fluorescence3.pt fluorescence

The weights are saved unchanged; the card's ``name`` becomes NAME and the ``--out`` of
its reproducing command becomes ``NAME.pt``, so the card describes the bundled file. A
warm-started model's card gets the starting model's training record
(``training.init_training``) if it lacks it: run before the starting model is replaced.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from napari_denodet.core.models import load_model, save_model
from napari_denodet.core.train import init_training

MODELS = Path(__file__).resolve().parents[1] / "src" / "napari_denodet" / "models"


def main() -> None:
    """Copy the model and rename it in its card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="trained MODEL.pt (its card beside it)")
    parser.add_argument("name", help="bundled name, e.g. fluorescence")
    args = parser.parse_args()
    model = load_model(args.model)
    card = dict(model.card, name=args.name)
    command = shlex.split(card["training"]["command"])
    command[command.index("--out") + 1] = f"{args.name}.pt"
    training = dict(card["training"], command=shlex.join(command))
    init = (training.get("settings") or {}).get("init")
    if init and "init_training" not in training:
        # A warm start: keep the starting model's record (made before cards kept it).
        training["init_training"] = init_training(init)
    card["training"] = training
    out = save_model(MODELS / f"{args.name}.pt", model.network, card, overwrite=True)
    print(f"bundled {args.model} as {out}")


if __name__ == "__main__":
    main()
