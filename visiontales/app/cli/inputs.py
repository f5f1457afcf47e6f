"""What the evaluation commands read: the references (a VIST split, your stories file or the
shipped sample) under a protocol, and the systems' prediction files, keyed alike.

Shared by ``evaluate``, ``report`` and ``sheet`` (:mod:`.evaluate`).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def apply_protocol(args) -> None:
    """Fill the protocol's settings the user left out (``--by``, ``--seq-len``,
    ``--meteor-mode``), refusing ones the published protocols do not allow."""
    from visiontales.evaluation.protocols import METEOR_MODE, STORY_LENGTH, keyed_by
    args.by = keyed_by(args.protocol, args.by)
    if hasattr(args, "meteor_mode"):  # evaluate/report; evaluate() refuses standard for arel
        args.meteor_mode = args.meteor_mode or METEOR_MODE[args.protocol]
    if args.protocol == "window":
        args.seq_len = args.seq_len or (None if getattr(args, "stories", None) else 3)
        return
    if getattr(args, "stories", None):
        raise ValueError(f"--protocol {args.protocol} scores VIST's own stories; score --stories "
                         "with --protocol window")
    if args.seq_len not in (None, STORY_LENGTH):
        raise ValueError(f"--protocol {args.protocol} scores whole {STORY_LENGTH}-photo stories; "
                         f"drop --seq-len {args.seq_len}")
    args.seq_len = STORY_LENGTH


def reference_dataset(args):
    """The reference dataset: your stories file, a VIST SIS file with its images, or the
    shipped sample split."""
    from visiontales.data.vist import load_vist
    from visiontales.data.sample import sample_dataset
    if args.stories:
        if args.references:
            raise ValueError("give --stories or --references, not both")
        from visiontales.data.stories import load_stories
        return load_stories(args.stories, seq_len=args.seq_len, progress=False)
    if args.references:
        if not args.images:
            raise ValueError("--references needs --images (the folder of that split's photos)")
        return load_vist(args.references, args.images, seq_len=args.seq_len, progress=False)
    return sample_dataset(args.sample, seq_len=args.seq_len)


def sis_file(args) -> str | None:
    from visiontales.data.sample import SAMPLE_DATA_DIR
    if args.stories:
        return None
    return args.references or str(SAMPLE_DATA_DIR / f"{args.sample}.story-in-sequence.json")


def read_systems(paths: list[str]) -> dict[str, dict[str, str]]:
    """``name=path`` or ``path`` (named after the file) -> {system: {key: story}}."""
    from visiontales.evaluation.predictions import read_predictions
    systems: dict[str, dict[str, str]] = {}
    for spec in paths:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or Path(path).stem
        if name in systems:
            raise ValueError(f"two prediction files are named {name!r}; use NAME=PATH")
        systems[name] = read_predictions(path)
    return systems


def photo_items(dataset, by: str) -> dict[str, list[str]]:
    from visiontales.evaluation.predictions import prediction_keys
    items: dict[str, list[str]] = {}
    for key, paths in zip(prediction_keys(dataset, by), dataset.frame["image_paths"]):
        items.setdefault(key, list(paths))
    return items


def add_reference_args(p: argparse.ArgumentParser) -> None:
    from visiontales.evaluation.protocols import PROTOCOLS
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="window",
                   help="arel: AREL's album evaluation (Wang et al. 2018; its published scores and "
                        "papers that use its evaluator): one story per album, keyed by album id; "
                        "vist-challenge: the NAACL 2018 VIST challenge's METEOR: one story per "
                        "photo sequence, keyed by the five photo ids joined by '_'; both score "
                        "whole 5-photo stories exactly as published. window (default): "
                        "visiontales' own, --seq-len windows, not comparable to published tables")
    p.add_argument("--references", "--annotations", dest="references",
                   help="VIST SIS json whose stories are the references")
    p.add_argument("--images", "--images-dir", dest="images", help="image folder of that split")
    p.add_argument("--stories", metavar="FILE", help="your own sequences (JSON lines or CSV, as train "
                                                     "--stories takes) as the references")
    p.add_argument("--sample", default="val", choices=["train", "val"],
                   help="without --references: the shipped sample split (default: val)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="images per window with --protocol window (default: 3; the published "
                        "protocols use whole 5-photo stories)")
    p.add_argument("--by", choices=["sequence", "album"], default=None,
                   help="--protocol window's grouping of references: all stories over the same "
                        "photo sequence (default) or all stories of the album")
    p.add_argument("--predictions", action="append", default=[], metavar="[NAME=]FILE",
                   help="a system's prediction file: JSON lines with key and story (as written by "
                        "'visiontales generate --out'), {key: story}, AREL's {album_id: [story]} "
                        "or a VIST challenge submission (output_stories); repeat for each system")
