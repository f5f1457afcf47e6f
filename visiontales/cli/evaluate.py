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


def _references(args):
    """The reference dataset: a VIST SIS file with its images, or the shipped sample split."""
    from ..data import load_vist, sample_dataset
    if args.references:
        if not args.images:
            raise ValueError("--references needs --images (the folder of that split's photos)")
        return load_vist(args.references, args.images, seq_len=args.seq_len, progress=False)
    return sample_dataset(args.sample, seq_len=args.seq_len)


def _systems(paths: list[str]) -> dict[str, dict[str, str]]:
    """``name=path`` or ``path`` (named after the file) -> {system: {key: story}}."""
    from ..predictions import read_predictions
    systems: dict[str, dict[str, str]] = {}
    for spec in paths:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or Path(path).stem
        if name in systems:
            raise ValueError(f"two prediction files are named {name!r}; use NAME=PATH")
        systems[name] = read_predictions(path)
    return systems


def _items(dataset, by: str) -> dict[str, list[str]]:
    from ..metrics import prediction_keys
    items: dict[str, list[str]] = {}
    for key, paths in zip(prediction_keys(dataset, by), dataset.frame["image_paths"]):
        items.setdefault(key, list(paths))
    return items


def _score(args, dataset, systems) -> pd.DataFrame:
    """One row per system: the VIST metrics, reference-free scores, grounding and judge."""
    from ..metrics import as_frame, evaluate, references_from_dataset
    references = references_from_dataset(dataset, by=args.by)
    items = _items(dataset, args.by)
    grounding_model = None
    if args.grounding_model:
        from ..model import StoryModel
        grounding_model = StoryModel.from_pretrained(args.grounding_model)
    results = {}
    for name, preds in systems.items():
        missing = [k for k in references if k not in preds]
        if missing:
            raise ValueError(f"system {name!r} has no story for {len(missing)} of {len(references)} "
                             f"sequences (e.g. {missing[0]}); generate with the same --by ({args.by})")
        preds = {k: preds[k] for k in references}
        results[name] = evaluate(preds, references, metrics=args.metrics, meteor_mode=args.meteor_mode)
        keys = list(references)
        if grounding_model is not None:
            scores = grounding_model.grounding([preds[k] for k in keys], [items[k] for k in keys])
            results[name]["grounding"] = sum(scores) / len(scores)
        if args.judge:
            from ..judge import OpenAICompatibleJudge
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
    from ..report import write_report
    from ..utils import atomic_path, require, write_json
    if set(args.metrics) - {"reference_free"}:  # before any work: say which extra is missing
        require("pycocoevalcap", "eval", "the VIST metrics")
    dataset = _references(args)
    systems = _systems(args.predictions)
    table = _score(args, dataset, systems)
    _print_table(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp)
    write_json(out.with_suffix(".json"), {
        "protocol": {"by": args.by, "meteor_mode": args.meteor_mode, "seq_len": args.seq_len,
                     "references": str(args.references or f"sample:{args.sample}")},
        "systems": {name: {k: (None if isinstance(v, float) and math.isnan(v) else v)
                           for k, v in row.items()} for name, row in table.to_dict("index").items()}})
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.json')}")
    if args.report:
        from ..metrics import references_from_dataset
        write_report(args.report, _items(dataset, args.by), systems,
                     references_from_dataset(dataset, by=args.by), table,
                     max_items=args.max_items)
        print(f"wrote {args.report}")
    return 0


def cmd_report(args) -> int:
    args.report = args.out
    args.out = str(Path(args.out).with_suffix(""))
    return cmd_evaluate(args)


def cmd_sheet(args) -> int:
    from ..human_eval import aggregate_ratings, export_rating_sheet
    if args.action == "export":
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
    p.add_argument("--references", help="VIST SIS json whose stories are the references")
    p.add_argument("--images", help="image folder of that split")
    p.add_argument("--sample", default="val", choices=["train", "val"],
                   help="without --references: the shipped sample split (default: val)")
    p.add_argument("--seq-len", type=int, default=3, help="images per window (default: 3)")
    p.add_argument("--by", choices=["sequence", "album"], default="sequence",
                   help="reference grouping: all stories over the same photo sequence (default) "
                        "or all stories of the album (AREL's protocol)")
    p.add_argument("--predictions", action="append", default=[], metavar="[NAME=]FILE",
                   help="a system's prediction file (JSON lines with key and story, as written by "
                        "'visiontales generate --out'); repeat for each system")


def add_commands(sub) -> None:
    from ..metrics import METRICS
    for name, func, help_text in (
            ("evaluate", cmd_evaluate, "score prediction files side by side (VIST metrics, grounding, judge)"),
            ("report", cmd_report, "write one self-contained HTML page: metrics, photos, stories, references")):
        p = sub.add_parser(name, help=help_text)
        _add_reference_args(p)
        p.add_argument("--metrics", nargs="+", default=list(METRICS), choices=list(METRICS),
                       help="metrics to compute (default: all)")
        p.add_argument("--meteor-mode", choices=["standard", "hter"], default="standard",
                       help="METEOR as pycocoevalcap runs it, or with -t hter as the VIST challenge/AREL")
        p.add_argument("--grounding-model", metavar="DIR",
                       help="saved model whose CLIP scores image-story agreement (CLIPScore)")
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
