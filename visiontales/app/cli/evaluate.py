"""Evaluation commands: ``visiontales evaluate``, ``visiontales report``, ``visiontales sheet``.

Scores prediction files (as ``visiontales generate --out`` writes them) side by side: one
row per system with the metrics, the judge's criteria and people's ratings (from filled
rating sheets), and how far the judge and people agree. What the commands read is
:mod:`.inputs`. The metrics, judge and report modules are imported inside the commands, so
that parsing the command line never pulls in pycocoevalcap or an HTTP client.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from visiontales.app.cli.inputs import (
    add_reference_args, apply_protocol, photo_items, read_systems, reference_dataset, sis_file,
)


def _judge(args):
    """The rubric judge of ``--judge`` (None without it)."""
    if not args.judge:
        if args.judge_criteria:
            raise ValueError("--judge-criteria needs --judge URL (the judge's endpoint)")
        return None
    from visiontales.evaluation.judge import OpenAICompatibleJudge
    return OpenAICompatibleJudge(args.judge, args.judge_model, api_key_env=args.judge_api_key_env,
                                 send_images=args.judge_images, cache_dir=args.judge_cache,
                                 criteria=args.judge_criteria)


def _ratings(args):
    """People's ratings from ``--human`` sheets and ``--answer-key`` (None without them)."""
    if bool(args.human) != bool(args.answer_key):
        raise ValueError("--human FILLED.csv... and --answer-key KEY go together (the filled "
                         "sheets and the answer_key.json that 'sheet export' wrote with them)")
    if not args.human:
        return None
    from visiontales.evaluation.human_rating import read_ratings
    return read_ratings(args.human, args.answer_key)


def _score(args, dataset, references, systems):
    """One row per system (the VIST metrics, reference-free scores, grounding, the judge's and
    people's criteria) and the agreement table (None without ratings)."""
    from visiontales.evaluation.clipscore import model_grounding
    from visiontales.evaluation.comparison import comparison_table
    from visiontales.evaluation.metrics import evaluate
    items = photo_items(dataset, args.by)
    judge, ratings = _judge(args), _ratings(args)
    grounding_model = None
    if args.grounding_model:
        from visiontales.model.story_model import StoryModel
        grounding_model = StoryModel.from_pretrained(args.grounding_model)
    results, judged = {}, {}
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
        if judge is not None:
            judged[name] = judge.score_many([preds[k] for k in keys], keys=keys,
                                            images=[items[k] for k in keys] if args.judge_images else None)
    table = comparison_table(results, judged, ratings)
    if ratings is None:
        return table, None
    from visiontales.evaluation.agreement import agreement
    return table, agreement(ratings, judged)


def _print_table(table: pd.DataFrame) -> None:
    from visiontales.evaluation.comparison import readable
    with pd.option_context("display.width", 200, "display.max_columns", 60):
        print(readable(table).to_string())


def _plain(value):
    """A JSON value: nan as null, numpy numbers as Python numbers."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _agreement_notes(agree) -> list[str]:
    from visiontales.evaluation.agreement import AGREEMENT_NOTE, agreement_lines
    return [AGREEMENT_NOTE, *agreement_lines(agree)] if agree is not None else []


def cmd_evaluate(args) -> int:
    from visiontales.evaluation.protocols import PROTOCOLS, protocol_references
    from visiontales.evaluation.report import write_report
    from visiontales.utils import atomic_path, require, write_json
    apply_protocol(args)
    if set(args.metrics or ["METEOR"]) - {"reference_free"}:  # before any work: name the extra
        require("pycocoevalcap", "eval", "the VIST metrics")
    dataset = reference_dataset(args)
    references = protocol_references(dataset, args.protocol, by=args.by, annotations=sis_file(args))
    systems = read_systems(args.predictions)
    table, agree = _score(args, dataset, references, systems)
    notes = _agreement_notes(agree)
    print(f"protocol {args.protocol}: {PROTOCOLS[args.protocol]}")
    _print_table(table)
    for note in notes:
        print(note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp)
    record = {
        "protocol": {"name": args.protocol, "about": PROTOCOLS[args.protocol], "by": args.by,
                     "meteor_mode": args.meteor_mode, "seq_len": args.seq_len, "normalize": args.normalize,
                     "references": str(args.stories or args.references or f"sample:{args.sample}")},
        "systems": {name: {k: _plain(v) for k, v in row.items()}
                    for name, row in table.to_dict("index").items()}}
    if agree is not None:
        record["agreement"] = {c: {k: _plain(v) for k, v in row.items()}
                               for c, row in agree.to_dict("index").items()}
        record["agreement_note"] = notes[0]
    write_json(out.with_suffix(".json"), record)
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.json')}")
    if args.report:
        from visiontales.evaluation.comparison import readable
        write_report(args.report, photo_items(dataset, args.by), systems, references,
                     readable(table), max_items=args.max_items, notes=notes)
        print(f"wrote {args.report}")
    return 0


def cmd_report(args) -> int:
    args.report = args.out
    args.out = str(Path(args.out).with_suffix(""))
    return cmd_evaluate(args)


def cmd_sheet(args) -> int:
    from visiontales.evaluation.human_rating import export_rating_sheet, read_ratings, summarize_ratings
    if args.action == "export":
        from visiontales.evaluation.judge import rubric
        apply_protocol(args)
        dataset = reference_dataset(args)
        systems = read_systems(args.predictions)
        keys = list(photo_items(dataset, args.by))[:args.max_items]
        systems = {name: {k: preds[k] for k in keys if k in preds} for name, preds in systems.items()}
        paths = export_rating_sheet(systems, args.out, items=photo_items(dataset, args.by),
                                    seed=args.seed, criteria=list(rubric(args.criteria)))
        print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
        print("give raters sheet.csv or sheet.html; keep answer_key.json to yourself")
    else:
        from visiontales.evaluation.agreement import agreement
        ratings = read_ratings(args.filled, args.answer_key)
        table = summarize_ratings(ratings)
        _print_table(table)
        for note in _agreement_notes(agreement(ratings)):
            print(note)
        if args.out:
            table.to_csv(args.out)
    return 0


def _add_judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge", metavar="URL", help="OpenAI-compatible endpoint for the rubric judge, "
                                                  "e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", default="gpt-4o", help="judge model name (default: gpt-4o)")
    p.add_argument("--judge-criteria", nargs="+", metavar="NAME",
                   help="the judge's rubric: quality (default: coherence, relevance, emotional_depth, "
                        "overall; the recipe's Table 1), narrative (character_development, "
                        "plot_progression, emotional_engagement, overall; its Table 4), or criterion "
                        "names, NAME=QUESTION for one of your own")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    p.add_argument("--judge-images", action="store_true", help="send the photos to the judge too")
    p.add_argument("--judge-cache", default=".visiontales_judge_cache",
                   help="folder caching judge answers so re-runs never re-ask")
    p.add_argument("--human", nargs="+", metavar="FILLED.csv",
                   help="rating sheets filled by people (one per rater; 'sheet export' wrote them): "
                        "adds their means per criterion and their agreement with each other and "
                        "with the judge")
    p.add_argument("--answer-key", help="the answer_key.json of those sheets")


def add_commands(sub) -> None:
    from visiontales.evaluation.metrics import METRICS
    for name, func, help_text in (
            ("evaluate", cmd_evaluate, "score prediction files side by side (VIST metrics, grounding, judge, "
                                          "human ratings and their agreement)"),
            ("report", cmd_report, "write one self-contained HTML page: metrics, photos, stories, references")):
        p = sub.add_parser(name, help=help_text)
        add_reference_args(p)
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
        _add_judge_args(p)
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
    add_reference_args(e)
    e.add_argument("--out", default="rating", help="output folder (default: rating)")
    e.add_argument("--max-items", type=int, default=50, help="sequences on the sheet (default: 50)")
    e.add_argument("--seed", type=int, default=0, help="seed of the per-item shuffling")
    e.add_argument("--criteria", nargs="+", metavar="NAME",
                   help="what people rate: a rubric as evaluate --judge-criteria takes (default: "
                        "coherence, relevance, emotional_depth, overall)")
    a = actions.add_parser("aggregate", help="mean and 95%% interval per criterion and system, and "
                                             "how far the raters agree")
    a.add_argument("filled", nargs="+", help="filled sheet.csv files (one per rater)")
    a.add_argument("--answer-key", required=True, help="answer_key.json written by export")
    a.add_argument("--out", help="also write the table as CSV")
    p.set_defaults(func=cmd_sheet)
