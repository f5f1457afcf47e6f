"""Evaluation commands: ``visiontales evaluate``, ``visiontales report``, ``visiontales sheet``.

Scores prediction files (as ``visiontales generate --out`` writes them) side by side. The
metrics, judge and report modules are imported inside the commands, so that parsing the
command line never pulls in pycocoevalcap or an HTTP client.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def _protocol(args) -> None:
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


def _references(args):
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


def _sis_file(args) -> str | None:
    from visiontales.data.sample import SAMPLE_DATA_DIR
    if args.stories:
        return None
    return args.references or str(SAMPLE_DATA_DIR / f"{args.sample}.story-in-sequence.json")


def _systems(paths: list[str]) -> dict[str, dict[str, str]]:
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


def _items(dataset, by: str) -> dict[str, list[str]]:
    from visiontales.evaluation.predictions import prediction_keys
    items: dict[str, list[str]] = {}
    for key, paths in zip(prediction_keys(dataset, by), dataset.frame["image_paths"]):
        items.setdefault(key, list(paths))
    return items


def _score(args, dataset, references, systems) -> pd.DataFrame:
    """One row per system: the VIST metrics, reference-free scores, grounding and judge."""
    from visiontales.evaluation.clipscore import model_grounding
    from visiontales.evaluation.metrics import as_frame, evaluate
    items = _items(dataset, args.by)
    grounding_model = None
    if args.grounding_model:
        from visiontales.model.story_model import StoryModel
        grounding_model = StoryModel.from_pretrained(args.grounding_model)
    results = {}
    for name, preds in systems.items():
        missing = [k for k in references if k not in preds]
        if missing:
            raise ValueError(f"system {name!r} has no story for {len(missing)} of {len(references)} "
                             f"{'albums' if args.by == 'album' else 'photo sequences'} (e.g. "
                             f"{missing[0]}); --protocol {args.protocol} keys stories by {args.by}")
        preds = {k: preds[k] for k in references}
        results[name] = evaluate(preds, references, metrics=args.metrics, protocol=args.protocol,
                                 meteor_mode=args.meteor_mode, normalize=args.normalize)
        keys = list(references)
        if grounding_model is not None:
            scores = model_grounding(grounding_model, [preds[k] for k in keys], [items[k] for k in keys])
            results[name]["grounding"] = sum(scores) / len(scores)
        if args.judge:
            from visiontales.evaluation.judge import OpenAICompatibleJudge
            judge = OpenAICompatibleJudge(args.judge, args.judge_model, api_key_env=args.judge_api_key_env,
                                          send_images=args.judge_images, cache_dir=args.judge_cache)
            rubric = judge.score_many([preds[k] for k in keys],
                                      images=[items[k] for k in keys] if args.judge_images else None,
                                      keys=keys)
            results[name].update({f"judge_{c}": float(rubric[c].mean()) for c in rubric.columns})
    return as_frame(results)


def _print_table(table: pd.DataFrame) -> None:
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 200,
                           "display.max_columns", 40):
        print(table.to_string(na_rep="n/a"))


def cmd_evaluate(args) -> int:
    from visiontales.evaluation.protocols import PROTOCOLS, protocol_references
    from visiontales.evaluation.report import write_report
    from visiontales.utils import atomic_path, require, write_json
    _protocol(args)
    if set(args.metrics or ["METEOR"]) - {"reference_free"}:  # before any work: name the extra
        require("pycocoevalcap", "eval", "the VIST metrics")
    dataset = _references(args)
    references = protocol_references(dataset, args.protocol, by=args.by, annotations=_sis_file(args))
    systems = _systems(args.predictions)
    table = _score(args, dataset, references, systems)
    print(f"protocol {args.protocol}: {PROTOCOLS[args.protocol]}")
    _print_table(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp)
    write_json(out.with_suffix(".json"), {
        "protocol": {"name": args.protocol, "about": PROTOCOLS[args.protocol], "by": args.by,
                     "meteor_mode": args.meteor_mode, "seq_len": args.seq_len, "normalize": args.normalize,
                     "references": str(args.stories or args.references or f"sample:{args.sample}")},
        "systems": {name: {k: (None if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in row.items()} for name, row in table.to_dict("index").items()}})
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.json')}")
    if args.report:
        write_report(args.report, _items(dataset, args.by), systems, references, table,
                     max_items=args.max_items)
        print(f"wrote {args.report}")
    return 0


def cmd_report(args) -> int:
    args.report = args.out
    args.out = str(Path(args.out).with_suffix(""))
    return cmd_evaluate(args)


def cmd_sheet(args) -> int:
    from visiontales.evaluation.human_rating import aggregate_ratings, export_rating_sheet
    if args.action == "export":
        _protocol(args)
        dataset = _references(args)
        systems = _systems(args.predictions)
        keys = list(_items(dataset, args.by))[:args.max_items]
        systems = {name: {k: preds[k] for k in keys if k in preds} for name, preds in systems.items()}
        paths = export_rating_sheet(systems, args.out, items=_items(dataset, args.by), seed=args.seed)
        print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
        print("give raters sheet.csv or sheet.html; keep answer_key.json to yourself")
    else:
        table = aggregate_ratings(args.filled, args.answer_key)
        _print_table(table)
        if args.out:
            table.to_csv(args.out)
    return 0


def _add_reference_args(p: argparse.ArgumentParser) -> None:
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


def add_commands(sub) -> None:
    from visiontales.evaluation.metrics import METRICS
    for name, func, help_text in (
            ("evaluate", cmd_evaluate, "score prediction files side by side (VIST metrics, grounding, judge)"),
            ("report", cmd_report, "write one self-contained HTML page: metrics, photos, stories, references")):
        p = sub.add_parser(name, help=help_text)
        _add_reference_args(p)
        p.add_argument("--metrics", nargs="+", default=None, choices=list(METRICS),
                       help="metrics to compute (default: all; METEOR for vist-challenge)")
        p.add_argument("--meteor-mode", choices=["standard", "hter"], default=None,
                       help="--protocol window's METEOR: as pycocoevalcap runs it (standard, the "
                            "default) or with -t hter (as AREL and the VIST challenge, which "
                            "always use hter)")
        p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                       help="tidy the predictions into VIST's tokenised form (default: on for "
                            "window, where references are normalised too; off for the published "
                            "protocols, which score the strings as given)")
        p.add_argument("--grounding-model", metavar="MODEL",
                       help="saved model (folder or Hub repo id) whose CLIP scores image-story "
                            "agreement (CLIPScore)")
        p.add_argument("--judge", metavar="URL", help="OpenAI-compatible endpoint for the rubric judge, "
                                                      "e.g. http://127.0.0.1:8000/v1")
        p.add_argument("--judge-model", default="gpt-4o", help="judge model name (default: gpt-4o)")
        p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
        p.add_argument("--judge-images", action="store_true", help="send the photos to the judge too")
        p.add_argument("--judge-cache", default=".visiontales_judge_cache",
                       help="folder caching judge answers so re-runs never re-ask")
        p.add_argument("--max-items", type=int, default=None, help="sequences shown in the report")
        if name == "evaluate":
            p.add_argument("--out", default="evaluation", help="writes OUT.csv and OUT.json")
            p.add_argument("--report", metavar="HTML", help="also write the HTML report here")
        else:
            p.add_argument("--out", default="report.html", help="the HTML file (default: report.html)")
        p.set_defaults(func=func)

    p = sub.add_parser("sheet", help="blind human-rating sheets: export, then aggregate filled ones")
    actions = p.add_subparsers(dest="action", required=True)
    e = actions.add_parser("export", help="write sheet.csv, sheet.html and answer_key.json")
    _add_reference_args(e)
    e.add_argument("--out", default="rating", help="output folder (default: rating)")
    e.add_argument("--max-items", type=int, default=50, help="sequences on the sheet (default: 50)")
    e.add_argument("--seed", type=int, default=0, help="seed of the per-item shuffling")
    a = actions.add_parser("aggregate", help="mean and 95%% interval per criterion and system")
    a.add_argument("filled", nargs="+", help="filled sheet.csv files (one per rater)")
    a.add_argument("--answer-key", required=True, help="answer_key.json written by export")
    a.add_argument("--out", help="also write the table as CSV")
    p.set_defaults(func=cmd_sheet)
