"""``visiontales demo`` (train on the shipped sample data, print held-out stories) and
``visiontales serve`` (the Gradio demo page; ``pip install "visiontales[demo]"``)."""
from __future__ import annotations

import time
from pathlib import Path

from visiontales.app.cli.args import add_model_args, add_training_args, build_model, shown, training_values

# The paper's settings are TrainingConfig's defaults; the demo uses them for real weights.
PAPER_FIELDS = ("lr", "epochs")
DEMO_OUTPUT_DIR = "runs/demo"


def demo_config(args):
    """The demo's ``TrainingConfig``: the tiny recipe (``TrainingConfig.tiny``) under the flags
    the user gave; without ``--tiny``/``--init`` the paper's ``lr`` and ``epochs`` instead,
    since a pretrained GPT-2 would be wrecked by the tiny model's rate."""
    from visiontales.training.config import TrainingConfig
    paper = {} if args.tiny or args.init else {name: getattr(TrainingConfig(), name) for name in PAPER_FIELDS}
    return TrainingConfig.tiny(**{"output_dir": DEMO_OUTPUT_DIR, **paper, **training_values(args)})


def _demo_defaults() -> dict[str, str]:
    """The "(default: ...)" texts of the demo's training flags: the tiny recipe's values."""
    from visiontales.training.config import TINY_TRAINING, TrainingConfig
    paper = TrainingConfig()
    texts = {name: shown(value) for name, value in TINY_TRAINING.items()}
    texts.update({name: f"{TINY_TRAINING[name]} with --tiny or --init, else the paper's "
                        f"{getattr(paper, name)}" for name in PAPER_FIELDS})
    return {**texts, "output_dir": DEMO_OUTPUT_DIR}


def cmd_demo(args) -> int:
    from visiontales.data.sample import sample_dataset
    from visiontales.evaluation.object_check import object_accuracy
    from visiontales.training.trainer import Trainer
    config = demo_config(args)
    start = time.perf_counter()
    train, val = sample_dataset("train"), sample_dataset("val")
    print(f"sample data: {len(train)} training windows, {len(val)} held-out windows")
    model = build_model(args, train)
    history = Trainer(model, train, val, config).train()
    last = history.dropna(subset=["eval_loss"]).tail(1)
    print(f"trained {config.epochs} epochs: train loss {history['loss'].iloc[0]:.2f} -> "
          f"{history['loss'].iloc[-1]:.2f}" + (f", eval loss {last['eval_loss'].iloc[0]:.2f}" if len(last) else ""))
    if len(last) and "eval_loss_shuffled" in last:
        gap = last["eval_loss_shuffled"].iloc[0] - last["eval_loss"].iloc[0]
        print(f"photo dependence: eval loss {last['eval_loss'].iloc[0]:.2f}, with the photos shuffled "
              f"{last['eval_loss_shuffled'].iloc[0]:.2f} (gap {gap:.2f} nats per token)")
    scores = object_accuracy(model, val, precision=config.precision, cache_dir=config.cache_dir)
    where = "at the right photo" if model.config.prefix != "mean" else "in any order (mean prefix)"
    print(f"object accuracy: {scores['accuracy']:.2f} (chance: {scores['chance']:.2f}), "
          f"{len(val)} held-out windows, objects named {where}")
    frame = val.frame.drop_duplicates("photo_ids").head(args.show)
    stories = model.generate([list(p) for p in frame["image_paths"]], num_beams=args.num_beams,
                             precision=config.precision, progress=config.progress, cache_dir=config.cache_dir)
    for (_, row), story in zip(frame.iterrows(), stories):
        print(f"\nphotos {' '.join(row['photo_ids'])}")
        print(f"  generated: {story}")
        print(f"  reference: {row['text']}")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; model in {Path(config.output_dir) / 'final'}")
    return 0


def cmd_serve(args) -> int:
    from visiontales.app.page import serve
    serve(model_dir=args.model, tiny=args.tiny, sample=args.sample, port=args.port,
          host=args.host, open_browser=args.open)  # Gradio missing: ImportError, one line from main
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="train on the shipped sample data and print held-out stories")
    add_model_args(p)
    # order-aware by default: the paper's mean prefix averages the photos, so its stories
    # cannot follow their order (README, "Why the demo is order-aware"); --prefix mean for it
    p.set_defaults(prefix="sequence")
    p.add_argument("--show", type=int, default=5, help="held-out sequences to print")
    p.add_argument("--num-beams", type=int, default=1, help="beam width for the printed stories")
    add_training_args(p, defaults=_demo_defaults(), given_only=True)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="open the demo page: add photos, reorder them, get a story")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="DIR", help="folder written by save_pretrained / train, "
                                                       "or a Hugging Face Hub id (user/repo)")
    source.add_argument("--tiny", action="store_true",
                        help="the offline tiny model, trained on the shipped sample data first "
                             "(minutes on a CPU)")
    p.add_argument("--sample", action="store_true",
                   help="open with a shipped sample sequence loaded (the tiny model unless --model)")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=cmd_serve)
