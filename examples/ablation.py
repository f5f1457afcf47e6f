"""Ablations in the manner of Table 3 of Lin & Chen's instruction tuning and RL recipe
(see :mod:`visiontales.recipes.instructions`), on the shipped sample data with tiny models.

    python examples/ablation.py --quick    # under a minute: a smoke run, its numbers mean little
    python examples/ablation.py            # 20 epochs, one seed: about 15 minutes on 2 CPU cores
    python examples/ablation.py --seeds 1 2 3   # mean ± sd over seeds (the README's table), 45 minutes
    python examples/ablation.py --clip ViT-B-32 --clip-pretrained openai --lm gpt2   # real weights

Every variant starts from the same seed and data and trains ``--epochs`` epochs; the RL term
(self-critical, CIDEr-D reward against the training references, ``L = L_NLL + lambda L_RL``)
is on in the last ``--rl-epochs`` of them. The variants:

- full: instruction mixture (story rows plus caption, continuation, consistency, fill-in and
  emotion/context rows), RL, ``prefix="sequence"``, GPT-2 fine-tuned;
- w/o instruction tuning: story rows only;
- w/o RL: NLL only;
- mean prefix: the paper's ``prefix="mean"`` (order lost) instead of ``"sequence"``;
- frozen GPT-2: only the prefix mapper trains. With tiny models the GPT-2 is first trained as
  a language model on the same texts without images (:func:`pretrain_lm`), in place of
  pretrained GPT-2.

Scores on the val split, one greedy story per photo sequence: BLEU-4, METEOR, ROUGE-L and
CIDEr (x100, :func:`visiontales.evaluation.metrics.evaluate`), and object accuracy: the fraction of
val photos whose object (the sample vocabulary's object word its reference sentence names)
is the object named at the same position in the story (the k-th object word the story names
is compared with photo k's). The paper's table has GPT-4 rubric scores; these are n-gram
metrics of tiny models on procedurally drawn data: they say whether each part helps here,
not how the real system does. Over seeds 1-3 the standard deviation of CIDEr was 6 to 15
points per variant, and CIDEr on the sample val split moved from 74 to 119 over three more
NLL epochs of one run: read differences in CIDEr below about 20 as noise. Object accuracy
is steadier (sd 3 to 7) and is the column that shows what the prefix does. Below about 20
epochs the tiny models write fluent sample-data sentences but name objects at chance.
"""
import argparse
import time
from pathlib import Path

import torch

import visiontales as vt
from visiontales.data.sample import sample_vocabulary
from visiontales.recipes.instructions import build_instruction_dataset
from visiontales.evaluation.metrics import evaluate, references_from_dataset
from visiontales.evaluation.predictions import keys_for
from visiontales.recipes.rl import CiderReward, SelfCritical
from visiontales.model.tokens import collate, encode_targets

VARIANTS = {  # name -> (instructions, rl, prefix, freeze_lm)
    "full": (True, True, "sequence", False),
    "w/o instruction tuning": (False, True, "sequence", False),
    "w/o RL": (True, False, "sequence", False),
    "mean prefix": (True, True, "mean", False),
    "frozen GPT-2": (True, True, "sequence", True),
}
METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "object acc.")


def object_accuracy(stories: list[str], sentences: list) -> float:
    """Percentage of photos whose object is the object word named at their position.

    ``sentences``: per story, the reference sentence of each of its photos.
    """
    objects = set(sample_vocabulary()["objects"])
    hits = total = 0
    for story, sentences in zip(stories, sentences):
        named = [w for w in story.split() if w in objects]
        for k, sentence in enumerate(sentences):
            truth = [w for w in sentence.split() if w in objects]
            if len(truth) == 1:
                total += 1
                hits += k < len(named) and named[k] == truth[0]
    return 100.0 * hits / max(total, 1)


def pretrain_lm(model, data, args) -> None:
    """Train the tiny GPT-2 alone as a language model on ``data``'s texts (no images).

    It stands in for pretrained GPT-2 in the frozen row: freezing a randomly initialised
    GPT-2 would only say that a random network cannot write. Same prompts (instructions),
    epochs, learning rate and batch size as the image runs.
    """
    frame = data.frame
    prompts = ([model.prompt_ids(t or None) for t in frame["instruction"]] if "instruction" in frame
               else model.prompt_ids())
    examples = encode_targets(model.tokenizer, prompts, list(frame["text"]))
    optimizer = torch.optim.AdamW(model.lm.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    model.lm.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), args.batch_size):
            batch = collate([examples[i] for i in order[start:start + args.batch_size]],
                            model.tokenizer.eos_token_id)
            model.lm(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def make_model(args, vocab: list[str], prefix: str):
    if args.lm == "tiny":
        return vt.StoryModel.tiny(vocab_from=vocab, seed=args.seed, prefix=prefix)
    return vt.StoryModel.from_components(clip=args.clip, clip_pretrained=args.clip_pretrained,
                                         lm=args.lm, prefix=prefix)


def run_variant(name: str, args, train, mixture, val, vocab: list[str]) -> dict[str, float]:
    instructions, use_rl, prefix, freeze_lm = VARIANTS[name]
    data = mixture if instructions else train
    model = make_model(args, vocab, prefix)
    if freeze_lm and args.lm == "tiny":
        pretrain_lm(model, data, args)
    config = vt.TrainingConfig(
        lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, freeze_lm=freeze_lm,
        rl_weight=args.rl_weight if use_rl else 0.0, rl_start_epoch=args.epochs - args.rl_epochs,
        seed=args.seed, num_samples=0, save_every=0, progress=False,
        output_dir=str(Path(args.output_dir) / f"seed-{args.seed}" / name.replace("/", "").replace(" ", "-")))
    rl = SelfCritical(CiderReward(data), max_new_tokens=args.max_new_tokens) if use_rl else None
    vt.Trainer(model, data, config=config, rl=rl).train()
    first = list(keys_for(val).values())  # one story per photo sequence
    frame = val.frame.iloc[first]
    stories = model.generate([list(p) for p in frame["image_paths"]], max_new_tokens=args.max_new_tokens,
                             progress=False)
    metrics = ("BLEU", "ROUGE-L", "CIDEr") if args.quick else ("BLEU", "METEOR", "ROUGE-L", "CIDEr")
    scores = evaluate(dict(zip(keys_for(val), stories)), references_from_dataset(val), metrics=metrics)
    truths = list(frame["sentences"])
    scores["object acc."] = object_accuracy(stories, truths)
    # chance, measured: the same stories against the photos of other windows
    scores["chance"] = object_accuracy(stories, truths[7:] + truths[:7])
    return scores


def run_seed(args, seed: int, train, val) -> dict[str, dict[str, float]]:
    """Every variant with one seed (mixture, initialisation, shuffling, sampling)."""
    args = argparse.Namespace(**{**vars(args), "seed": seed})
    # half story rows, half the five other tasks: the story rows are the whole training set
    mixture = build_instruction_dataset(train, weights={"story": 5}, max_examples=2 * len(train),
                                        seed=seed)
    vocab = list(mixture.texts) + list(mixture.frame["instruction"])  # one tokenizer for all
    # encode every photo once up front, so the first variant's time is not the encoder's
    make_model(args, vocab, "sequence").encode_images(train.image_paths + val.image_paths, progress=False)
    print(f"seed {seed}: train {len(train)} windows, mixture {len(mixture)} rows "
          f"{mixture.frame['task'].value_counts().to_dict()}; val {len(val)} windows", flush=True)
    results = {}
    for name in args.variants:
        start = time.time()
        results[name] = run_variant(name, args, train, mixture, val, vocab)
        print(f"  {name}: {time.time() - start:.0f} s  " +
              "  ".join(f"{m} {results[name].get(m, float('nan')):.1f}" for m in METRICS), flush=True)
    return results


def print_table(per_seed: list[dict[str, dict[str, float]]]) -> None:
    """One row per variant: the value, or mean ± sample standard deviation over seeds."""
    print(f"{'Model variant':<24}" + "".join(f"{m:>15}" for m in METRICS))
    for name in per_seed[0]:
        cells = []
        for m in METRICS:
            values = torch.tensor([r[name].get(m, float("nan")) for r in per_seed], dtype=torch.float64)
            if values.isnan().all():
                cell = "n/a"
            elif len(values) == 1:
                cell = f"{values.mean():.1f}"
            else:
                cell = f"{values.mean():.1f} ± {values.std():.1f}"
            cells.append(f"{cell:>15}")
        print(f"{name:<24}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run on a subset")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of every variant")
    parser.add_argument("--rl-epochs", type=int, default=3, help="last epochs with the RL term")
    parser.add_argument("--rl-weight", type=float, default=0.5, help="lambda of L_NLL + lambda L_RL")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48, help="RL samples and val stories")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42],
                        help="one run of every variant per seed; several give mean ± sd")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (tiny models: 1 is fastest, more contend)")
    parser.add_argument("--lm", default="tiny", help='"tiny" (offline) or a GPT-2 name/folder')
    parser.add_argument("--clip", default="ViT-B-32", help="open_clip model (with --lm other than tiny)")
    parser.add_argument("--clip-pretrained", default="openai")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        metavar="NAME", help=f"run only these ({', '.join(VARIANTS)})")
    parser.add_argument("--output-dir", default="runs/ablation")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    train, val = vt.sample_dataset("train"), vt.sample_dataset("val")
    if args.quick:
        train, val = train.select(range(48)), val.select(range(15))
        args.epochs, args.rl_epochs, args.max_new_tokens = 2, 1, 16
    per_seed = [run_seed(args, seed, train, val) for seed in args.seeds]

    model_desc = "tiny models" if args.lm == "tiny" else f"{args.clip} + {args.lm}"
    seeds = f"seed {args.seeds[0]}" if len(args.seeds) == 1 else f"mean ± sd over seeds {args.seeds}"
    print(f"\nAblation (sample data, {model_desc}{', --quick' if args.quick else ''}; "
          f"{args.epochs} epochs, RL in the last {args.rl_epochs}; val split, greedy, x100; {seeds})")
    print_table(per_seed)
    chance = [scores["chance"] for results in per_seed for scores in results.values()]
    print(f"object acc. at chance (the same stories against other windows' photos): "
          f"{min(chance):.1f} to {max(chance):.1f}")
    if args.quick:
        print("METEOR is not computed with --quick (its Java start-up dominates a smoke run)")
    if args.lm == "tiny":
        print("frozen GPT-2 here is the tiny GPT-2 first trained on the texts alone (no images), "
              "then frozen: a stand-in for pretrained GPT-2")


if __name__ == "__main__":
    main()
