"""``visiontales train``: fine-tune on VIST, your own photo sequences (``--stories``) or the
shipped sample data, optionally on an instruction mixture with the self-critical RL step
(the instruction tuning and RL recipe)."""
from __future__ import annotations

from pathlib import Path

from visiontales.app.cli.args import add_model_args, add_training_args, build_model, training_values


def parse_tasks(specs: list[str]) -> dict[str, float]:
    """``["story=5", "caption"]`` -> ``{"story": 5.0, "caption": 1.0}``; ``["all"]``: every task.

    >>> parse_tasks(["story=5", "caption"])
    {'story': 5.0, 'caption': 1.0}
    """
    from visiontales.recipes.instructions import TASKS
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
    from visiontales.recipes.rl import CiderReward, GroundingReward, SelfCritical
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


def _datasets(args):
    """(train, val): your own sequences (``--stories``), the VIST files the flags name, or
    else the shipped sample splits."""
    from visiontales.data.vist import load_vist
    from visiontales.data.sample import sample_dataset
    from visiontales.data.stories import load_stories
    if args.stories or args.val_stories:
        if args.annotations or args.val_annotations:
            raise ValueError("give --stories or --annotations, not both")
        if not args.stories:
            raise ValueError("--val-stories needs --stories (the training sequences)")
        train = load_stories(args.stories, seq_len=args.seq_len, stride=args.stride)
        val = load_stories(args.val_stories, seq_len=args.seq_len) if args.val_stories else None
        return train, val
    seq_len = args.seq_len or 3
    if not args.annotations:
        return sample_dataset("train", seq_len=seq_len), sample_dataset("val", seq_len=seq_len)
    train = load_vist(args.annotations, args.images, seq_len=seq_len, stride=args.stride)
    val = (load_vist(args.val_annotations, args.val_images or args.images, seq_len=seq_len)
           if args.val_annotations else None)
    return train, val


def _describe(label: str, dataset) -> str:
    """``train: StoryDataset(...)``, and the first reason a row was skipped, if any."""
    line = f"{label} {dataset!r}"
    if len(dataset.skipped):
        first = dataset.skipped.iloc[0]
        line += f"; first skipped: {first['story_id']} ({first['reason']}); all in dataset.skipped"
    return line


def cmd_train(args) -> int:
    from visiontales.training.config import TrainingConfig
    from visiontales.training.loggers import check_available
    from visiontales.training.trainer import Trainer
    _check_recipe_flags(args)
    config = TrainingConfig(**training_values(args))
    check_available(config.report_to)  # a missing extra is said now, not after feature extraction
    train, val = _datasets(args)
    print(_describe("train:", train) + (f"\n{_describe('val:  ', val)}" if val is not None else ""))
    if args.tasks:  # the instruction tuning and RL recipe: windows become instruction examples
        from visiontales.recipes.instructions import build_instruction_dataset
        weights = parse_tasks(args.tasks)
        train = build_instruction_dataset(train, tasks=list(weights), weights=weights, seed=args.seed,
                                          max_examples=args.mixture_size)
        print(f"instruction mixture: {len(train)} rows {train.frame['task'].value_counts().to_dict()}")
    model = build_model(args, train)
    trainer = Trainer(model, train, val, config, rl=_build_rl(args, train, model))
    history = trainer.train(resume_from=args.resume)
    out = Path(config.output_dir)
    history.to_csv(out / "history.csv", index=False)
    trainer.plot_history().savefig(out / "history.png", dpi=120)
    print(history.tail(3).to_string(index=False))
    print(f"model saved to {out / 'final'}; history in {out / 'history.csv'} and history.png")
    if "tensorboard" in config.report_to:
        print(f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    return 0


def add_commands(sub) -> None:
    from visiontales.recipes.instructions import TASKS
    p = sub.add_parser("train", help="fine-tune on VIST, your own photo sequences or the shipped sample data")
    p.add_argument("--annotations", help="VIST SIS json, e.g. sis/train.story-in-sequence.json "
                                         "(default: the shipped sample dataset)")
    p.add_argument("--images", help="folder of <photo_flickr_id>.<ext> images")
    p.add_argument("--val-annotations", help="held-out SIS json for eval loss and samples")
    p.add_argument("--val-images", help="image folder of the held-out split (default: --images)")
    p.add_argument("--stories", metavar="FILE",
                   help="your own photo sequences instead: JSON lines ({\"images\": [...], \"story\": ...}) "
                        "or CSV (images ';'-separated, story), image paths relative to the file")
    p.add_argument("--val-stories", metavar="FILE", help="held-out sequences in the same form as --stories")
    p.add_argument("--seq-len", type=int, default=None,
                   help="images per window (default: 3 for VIST; whole sequences for --stories)")
    p.add_argument("--stride", type=int, default=1, help="step between windows (default: 1)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint folder or 'latest'")
    add_model_args(p)
    add_training_args(p)
    g = p.add_argument_group("instruction tuning and RL recipe")
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
