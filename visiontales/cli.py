"""Command line: ``visiontales {train,generate,demo,evaluate,report,sheet}`` (or ``python -m visiontales``).

Argument parsing lives here only; every command calls the library's typed functions.
Errors a user can fix print one line on stderr and exit 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

TINY_DEMO = dict(lr=1e-3, batch_size=8, epochs=30, warmup_steps=20, scheduler="linear",
                 num_samples=0, log_every=5)
PAPER = dict(lr=5e-5, epochs=7)  # the demo with real weights: the paper's settings


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--tiny", action="store_true",
                   help="small randomly initialised CLIP + GPT-2 (offline; no downloads)")
    g.add_argument("--clip", default="ViT-B-32", help="open_clip model name (default: ViT-B-32)")
    g.add_argument("--clip-pretrained", default="openai",
                   help="open_clip weights tag or local file (default: openai)")
    g.add_argument("--lm", default="gpt2", help="GPT-2 name on the Hub or local folder (default: gpt2)")
    g.add_argument("--prefix", choices=["mean", "sequence"], default="mean",
                   help="mean: average the images (paper); sequence: one prefix block per image")
    g.add_argument("--prefix-length", type=int, default=None,
                   help="prefix tokens (per image in sequence mode); default 10, tiny 4")
    g.add_argument("--init", metavar="DIR", help="start from a saved model folder instead")


def _add_training_args(p: argparse.ArgumentParser, defaults: dict | None = None,
                       helps: dict | None = None) -> None:
    """One flag per TrainingConfig field; ``defaults`` override some (None: decided later)."""
    from .train import TrainingConfig
    g = p.add_argument_group("training (TrainingConfig fields)")
    base = TrainingConfig()
    for f in fields(TrainingConfig):
        typed = getattr(base, f.name)
        default = (defaults or {}).get(f.name, typed)
        flag = "--" + f.name.replace("_", "-")
        shown = (helps or {}).get(f.name, f"(default: {default})")
        if isinstance(typed, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=shown)
        elif isinstance(typed, tuple):
            g.add_argument(flag, nargs="*", default=default, metavar="NAME",
                           help=f"(default: {' '.join(default) or 'none'})")
        elif typed is None:
            g.add_argument(flag, default=None, help="(default: none)")
        else:
            g.add_argument(flag, type=type(typed), default=default, help=shown)


def _config_from(args):
    from .train import TrainingConfig
    return TrainingConfig(**{f.name: getattr(args, f.name) for f in fields(TrainingConfig)})


def _build_model(args, train_data):
    from .model import StoryModel
    if args.init:
        return StoryModel.from_pretrained(args.init)
    if args.tiny:
        vocab = list(train_data.texts)
        if "instruction" in train_data.frame.columns:  # the tiny tokenizer learns the instructions too
            vocab += sorted(set(train_data.frame["instruction"]) - {""})
        return StoryModel.tiny(vocab_from=vocab, prefix=args.prefix,
                               prefix_length=args.prefix_length or 4)
    return StoryModel.from_components(clip=args.clip, clip_pretrained=args.clip_pretrained,
                                      lm=args.lm, prefix=args.prefix,
                                      prefix_length=args.prefix_length or 10)


def parse_tasks(specs: list[str]) -> dict[str, float]:
    """``["story=5", "caption"]`` -> ``{"story": 5.0, "caption": 1.0}``; ``["all"]``: every task.

    >>> parse_tasks(["story=5", "caption"])
    {'story': 5.0, 'caption': 1.0}
    """
    from .instructions import TASKS
    if specs == ["all"]:
        return {task: 1.0 for task in TASKS}
    weights = {}
    for spec in specs:
        task, _, weight = spec.partition("=")
        if task == "all":
            raise ValueError("--tasks: 'all' stands alone; or name each task with its weight")
        if task not in TASKS:
            raise ValueError(f"--tasks: unknown task {task!r}; choose from {', '.join(TASKS)} or 'all'")
        if task in weights:
            raise ValueError(f"--tasks: {task!r} is given twice")
        try:
            weights[task] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--tasks: weight of {task!r} must be a number, got {weight!r}") from None
    if not any(w > 0 for w in weights.values()):
        raise ValueError("--tasks: every weight is 0, so the mixture would be empty")
    return weights


def _build_rl(args, train, model):
    """The self-critical step of ``--rl-reward`` (None unless ``--rl-weight`` > 0)."""
    if args.rl_weight <= 0:
        return None
    from .rl import CiderReward, GroundingReward, SelfCritical
    reward = GroundingReward(model) if args.rl_reward == "grounding" else CiderReward(train)
    return SelfCritical(reward, max_new_tokens=args.rl_max_new_tokens or 40)


def _check_recipe_flags(args) -> None:
    """Flags of the instruction/RL recipe that would do nothing are an error, not a no-op."""
    if args.mixture_size is not None and not args.tasks:
        raise ValueError("--mixture-size needs --tasks (it sizes the instruction mixture)")
    given = [flag for flag, value in (("--rl-reward", args.rl_reward), ("--rl-max-new-tokens", args.rl_max_new_tokens))
             if value is not None]
    if given and args.rl_weight <= 0:
        raise ValueError(f"{' and '.join(given)} need --rl-weight > 0 (the RL step is off)")


def cmd_train(args) -> int:
    from .data import load_vist, sample_dataset
    from .train import Trainer
    _check_recipe_flags(args)
    if args.annotations:
        train = load_vist(args.annotations, args.images, seq_len=args.seq_len, stride=args.stride)
        val = (load_vist(args.val_annotations, args.val_images or args.images, seq_len=args.seq_len)
               if args.val_annotations else None)
    else:
        train, val = sample_dataset("train", seq_len=args.seq_len), sample_dataset("val", seq_len=args.seq_len)
    print(f"train: {train!r}" + (f"\nval:   {val!r}" if val is not None else ""))
    if args.tasks:  # seed 000: the windows become a mixture of instruction examples
        from .instructions import build_instruction_dataset
        weights = parse_tasks(args.tasks)
        train = build_instruction_dataset(train, tasks=list(weights), weights=weights, seed=args.seed,
                                          max_examples=args.mixture_size)
        print(f"instruction mixture: {len(train)} rows {train.frame['task'].value_counts().to_dict()}")
    model = _build_model(args, train)
    config = _config_from(args)
    trainer = Trainer(model, train, val, config, rl=_build_rl(args, train, model))
    history = trainer.train(resume_from=args.resume)
    out = Path(config.output_dir)
    history.to_csv(out / "history.csv", index=False)
    trainer.plot_history().savefig(out / "history.png", dpi=120)
    print(history.tail(3).to_string(index=False))
    print(f"model saved to {out / 'final'}; history in {out / 'history.csv'} and history.png")
    return 0


def _image_sequences(args) -> list[list[str]]:
    if args.folder:
        from .data import IMAGE_EXTENSIONS
        folder = Path(args.folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        images = sorted(str(p) for p in folder.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS if p.suffix)
        if not images:
            raise ValueError(f"{folder}: no images (.jpg, .jpeg, .png, .gif, .bmp) found")
        n = args.seq_len
        return [images[i:i + n] for i in range(0, len(images) - n + 1, n)] or [images]
    if not args.images:
        raise ValueError("give image paths (one sequence), --folder DIR, --annotations or --split")
    return [args.images]


def _prompt_from(args) -> dict:
    """``{"prompt": ...}`` from ``--task``/``--context``/``--prompt`` (empty: the model's own)."""
    from .instructions import INSTRUCTIONS, instruction_prompt
    if args.task and args.prompt is not None:
        raise ValueError("give --task or --prompt, not both")
    needs_context = bool(args.task) and "{context}" in INSTRUCTIONS[args.task]
    if needs_context and not args.context.strip():
        raise ValueError(f"--task {args.task} needs --context (the text it works from)")
    if args.context and not needs_context:
        raise ValueError("--context goes with --task continuation or --task fill_in only")
    if args.task:
        return {"prompt": instruction_prompt(args.task, args.context)}
    return {} if args.prompt is None else {"prompt": args.prompt}


def cmd_generate(args) -> int:
    from .model import StoryModel
    decoding = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=args.sample,
                    top_p=args.top_p, temperature=args.temperature, seed=args.seed, **_prompt_from(args))
    if args.task == "caption" and (args.annotations or args.split):
        raise ValueError("--task caption captions single photos; a prediction file holds one story "
                         "per photo sequence")
    model = StoryModel.from_pretrained(args.model)
    if args.annotations or args.split:
        return _generate_for_dataset(args, model, decoding)
    sequences = _image_sequences(args)
    if args.task == "caption":  # a caption is of one photo: every image on its own
        sequences = [[image] for seq in sequences for image in seq]
    stories = model.generate(sequences, **decoding)
    for seq, story in zip(sequences, stories):
        if args.json:
            print(json.dumps({"images": seq, "story": story}))
        else:
            print(" | ".join(Path(p).name for p in seq))
            print(f"  {story}\n")
    return 0


def _generate_for_dataset(args, model, decoding) -> int:
    """Stories for every evaluation key of a VIST split, written as a prediction file."""
    from .data import load_vist, sample_dataset
    from .predictions import predict, write_predictions
    if args.annotations:
        if not args.images_dir:
            raise ValueError("--annotations needs --images-dir (the folder of that split's photos)")
        dataset = load_vist(args.annotations, args.images_dir, seq_len=args.seq_len)
    else:
        dataset = sample_dataset(args.split, seq_len=args.seq_len)
    predictions = predict(model, dataset, by=args.by, **decoding)
    out = args.out or "predictions.jsonl"
    write_predictions(out, predictions, dataset, by=args.by)
    print(f"wrote {len(predictions)} stories to {out}")
    return 0


def demo_settings(args):
    """Fill ``--lr``/``--epochs`` not given: tiny settings (``--tiny``/``--init``), else the paper's."""
    for name in PAPER:
        if getattr(args, name) is None:
            setattr(args, name, TINY_DEMO[name] if args.tiny or args.init else PAPER[name])
    return args


def cmd_demo(args) -> int:
    from .data import sample_dataset
    from .train import Trainer
    demo_settings(args)
    start = time.perf_counter()
    train, val = sample_dataset("train"), sample_dataset("val")
    print(f"sample data: {len(train)} training windows, {len(val)} held-out windows")
    model = _build_model(args, train)
    config = _config_from(args)
    history = Trainer(model, train, val, config).train()
    last = history.dropna(subset=["eval_loss"]).tail(1)
    print(f"trained {config.epochs} epochs: train loss {history['loss'].iloc[0]:.2f} -> "
          f"{history['loss'].iloc[-1]:.2f}" + (f", eval loss {last['eval_loss'].iloc[0]:.2f}" if len(last) else ""))
    frame = val.frame.drop_duplicates("photo_ids").head(args.show)
    stories = model.generate([list(p) for p in frame["image_paths"]], num_beams=args.num_beams)
    for (_, row), story in zip(frame.iterrows(), stories):
        print(f"\nphotos {' '.join(row['photo_ids'])}")
        print(f"  generated: {story}")
        print(f"  reference: {row['text']}")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; model in {Path(config.output_dir) / 'final'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .instructions import TASKS
    parser = argparse.ArgumentParser(
        prog="visiontales", description="Turn a sequence of photos into a short story (VIST; CLIP + GPT-2).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune on VIST (or the shipped sample data)")
    p.add_argument("--annotations", help="VIST SIS json, e.g. sis/train.story-in-sequence.json "
                                         "(default: the shipped sample dataset)")
    p.add_argument("--images", help="folder of <photo_flickr_id>.<ext> images")
    p.add_argument("--val-annotations", help="held-out SIS json for eval loss and samples")
    p.add_argument("--val-images", help="image folder of the held-out split (default: --images)")
    p.add_argument("--seq-len", type=int, default=3, help="images per window (default: 3)")
    p.add_argument("--stride", type=int, default=1, help="step between windows (default: 1)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint folder or 'latest'")
    _add_model_args(p)
    _add_training_args(p)
    g = p.add_argument_group("instruction tasks and the RL step (seed 000)")
    g.add_argument("--tasks", nargs="+", metavar="TASK[=W]",
                   help="train on an instruction mixture of these tasks with weights, e.g. "
                        f"'story=5 caption continuation', or 'all' (tasks: {', '.join(TASKS)})")
    g.add_argument("--mixture-size", type=int, default=None,
                   help="rows in the mixture (default: windows x tasks)")
    g.add_argument("--rl-reward", choices=["cider", "grounding"], default=None,
                   help="reward of the self-critical step when --rl-weight > 0: CIDEr-D against the "
                        "training references, or CLIPScore grounding (default: cider)")
    g.add_argument("--rl-max-new-tokens", type=int, default=None, help="length of RL samples (default: 40)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="tell stories for image sequences with a saved model")
    p.add_argument("--model", required=True, help="folder written by save_pretrained / train")
    p.add_argument("images", nargs="*", help="image paths of one sequence, in order")
    p.add_argument("--folder", help="a folder of photos, cut in order into --seq-len sequences")
    p.add_argument("--seq-len", type=int, default=3, help="images per sequence with --folder")
    p.add_argument("--max-new-tokens", type=int, default=60, help="story length cap in tokens")
    p.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    p.add_argument("--sample", action="store_true", help="nucleus sampling instead of greedy/beam")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus mass with --sample")
    p.add_argument("--temperature", type=float, default=1.0, help="temperature with --sample")
    p.add_argument("--seed", type=int, default=None, help="seed for --sample")
    p.add_argument("--task", choices=TASKS,
                   help="ask a model trained with --tasks for this task (its instruction as prompt)")
    p.add_argument("--context", default="", help="the story so far (continuation) or the masked "
                                                 "story (fill_in) for --task")
    p.add_argument("--prompt", help="a free prompt text instead of the model's ('' for none)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--annotations", help="a VIST SIS json: tell a story for each of its photo sequences")
    p.add_argument("--images-dir", help="image folder for --annotations")
    p.add_argument("--split", choices=["train", "val"], help="the shipped sample split instead")
    p.add_argument("--by", choices=["sequence", "album"], default="sequence",
                   help="one story per photo sequence (default) or per album (AREL)")
    p.add_argument("--out", help="prediction file (JSON lines) for --annotations/--split "
                                 "(default: predictions.jsonl)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="train on the shipped sample data and print held-out stories")
    _add_model_args(p)
    p.add_argument("--show", type=int, default=5, help="held-out sequences to print")
    p.add_argument("--num-beams", type=int, default=1, help="beam width for the printed stories")
    _add_training_args(p, defaults={**TINY_DEMO, "output_dir": "runs/demo", "lr": None, "epochs": None},
                       helps={name: f"(default: {TINY_DEMO[name]} with --tiny or --init, else the paper's "
                                    f"{PAPER[name]})" for name in PAPER})
    p.set_defaults(func=cmd_demo)

    from .cli_eval import add_commands
    add_commands(sub)
    from .cli_serve import add_commands as add_serve_commands
    add_serve_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError, TypeError, ImportError) as err:  # the user can fix these
        if args.debug:
            raise
        print(f"visiontales {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else: still one line; --debug for the traceback
        if args.debug:
            raise
        print(f"visiontales {args.command}: internal error ({type(err).__name__}): {err}; "
              "rerun with --debug for the traceback", file=sys.stderr)
        return 1
