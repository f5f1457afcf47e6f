"""The README's grounding table: do the stories name what the held-out photos show?

For each seed and prefix: the tiny model trained with the package's one offline recipe,
``visiontales.recipes.tiny.train_tiny_model`` (``TrainingConfig.tiny()``: 40 epochs on the shipped
sample data), as ``tests/test_grounding.py`` trains it, then greedy stories for the 90 held-out
windows, scored with :mod:`visiontales.evaluation.object_check` against the photos' objects, against
chance (other albums' photos) and, for the ``sequence`` and ``patches`` prefixes, against the
reversed order. ``--train-clip-blocks 1`` also trains the image tower's last block.

    python examples/grounding.py                      # seeds 0-4, both prefixes: ~15 min on 2 CPU cores
    python examples/grounding.py --seeds 0 --prefix sequence
    python examples/grounding.py --prefix sequence --epochs 20   # the recipe before 40 epochs
    python examples/grounding.py --prefix patches                # the patch-token prefix
    python examples/grounding.py --prefix sequence --train-clip-blocks 1
"""
from __future__ import annotations

import argparse

import pandas as pd

import visiontales as vt
from visiontales.training.photo_dependence import photo_dependence
from visiontales.evaluation.object_check import object_accuracy
from visiontales.recipes.tiny import train_tiny_model

PREFIXES = ("sequence", "mean", "patches")


def grounding_row(prefix: str, seed: int, **overrides) -> dict:
    val = vt.sample_dataset("val")
    model = train_tiny_model(prefix, seed=seed, eval_dataset=val, progress=False, **overrides)
    scores = object_accuracy(model, val)
    row = {"prefix": prefix + (f" + train_clip_blocks={overrides['train_clip_blocks']}"
                               if overrides.get("train_clip_blocks") else ""),
           "seed": seed, "accuracy": scores["accuracy"], "chance": scores["chance"]}
    if "reversed" in scores:
        row["reversed order"] = scores["reversed"]
    row["photo gap"] = photo_dependence(model, val)["gap"]  # eval_loss_shuffled - eval_loss
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--prefix", nargs="+", choices=PREFIXES, default=list(PREFIXES[:2]))
    parser.add_argument("--epochs", type=int, help="instead of the tiny recipe's (40)")
    parser.add_argument("--train-clip-blocks", type=int, default=0, help="TrainingConfig.train_clip_blocks")
    args = parser.parse_args()
    overrides = {"epochs": args.epochs} if args.epochs else {}
    if args.train_clip_blocks:
        overrides["train_clip_blocks"] = args.train_clip_blocks
    rows = []
    for prefix in args.prefix:
        for seed in args.seeds:
            rows.append(grounding_row(prefix, seed, **overrides))
            print(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in rows[-1].items()), flush=True)
    table = pd.DataFrame(rows)
    print("\n" + table.round(2).to_string(index=False))
    summary = table.groupby("prefix", sort=False).agg(["min", "max"]).drop(columns="seed")
    print("\nper prefix, min and max over seeds", args.seeds)
    print(summary.round(2).to_string())


if __name__ == "__main__":
    main()
