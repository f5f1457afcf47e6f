"""How far bf16 features are from fp32 ones, and whether training notices.

``precision="auto"`` extracts CLIP features with a bf16 copy of the frozen image tower where
the hardware computes bf16 natively. This measures what that changes:

  1. cosine similarity between bf16 and fp32 features of the same images: full-size
     ViT-B/32 (random weights: OpenAI's architecture and compute), the shipped sample photos;
  2. the tiny offline recipe (``TrainingConfig.tiny``, ``sequence`` prefix) trained in fp32 on
     features extracted in fp32, then in bf16, for several seeds: final eval loss of each.
     The difference between the two columns is to be read against the spread over seeds.

The first line says what the machine is; the last line is
``min_cosine=... mean_cosine=... max_eval_loss_diff=... seed_spread=...``.

    python benchmarks/bf16_features.py [--images 256] [--seeds 0 1 2] [--quick]
"""
from __future__ import annotations

import tempfile

import torch

from common import benchmark_parser, build_model, device_of, machine

import visiontales as vt


def cosines(model: vt.StoryModel, paths: list[str]) -> torch.Tensor:
    """Per-image cosine between fp32 and bf16-weight features (each in a fresh cache)."""
    fp32 = model.encode_images(paths, tempfile.mkdtemp(), progress=False, precision="fp32")
    bf16 = model.encode_images(paths, tempfile.mkdtemp(), progress=False, precision="bf16")
    return torch.nn.functional.cosine_similarity(fp32, bf16)


def final_eval_loss(features: str, seed: int, epochs: int) -> float:
    """The tiny recipe trained in fp32 on features extracted at precision ``features``."""
    train, val = vt.sample_dataset("train"), vt.sample_dataset("val")
    model = vt.StoryModel.tiny(vocab_from=train, prefix="sequence")
    cache = tempfile.mkdtemp()
    model.encode_images(train.image_paths + val.image_paths, cache, progress=False, precision=features)
    config = vt.TrainingConfig.tiny(seed=seed, epochs=epochs, precision="fp32", cache_dir=cache,
                                    progress=False, save_every=0, output_dir=tempfile.mkdtemp())
    trainer = vt.Trainer(model, train, val, config)   # the cache already holds every photo
    trainer.train()
    return float(trainer.history_frame()["eval_loss"].dropna().iloc[-1])


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    epochs = 2 if args.quick else vt.TrainingConfig.tiny().epochs
    if args.quick:
        args.images, args.seeds = min(args.images, 8), args.seeds[:1]
    device = device_of(args)
    print(machine(device, "bf16"), flush=True)
    paths = (vt.sample_dataset("train").image_paths + vt.sample_dataset("val").image_paths)[:args.images]
    cos = cosines(build_model(args.quick).to(device), paths)
    print(f"cosine(bf16, fp32) over {len(paths)} photos: min {cos.min():.4f}, mean {cos.mean():.4f}", flush=True)

    print("seed  eval loss (fp32 features)  eval loss (bf16 features)  difference")
    rows = []
    for seed in args.seeds:
        fp32, bf16 = final_eval_loss("fp32", seed, epochs), final_eval_loss("bf16", seed, epochs)
        rows.append((fp32, bf16))
        print(f"{seed:4d}  {fp32:25.4f}  {bf16:25.4f}  {bf16 - fp32:+10.4f}", flush=True)
    diff = max(abs(b - f) for f, b in rows)
    spread = max(f for f, _ in rows) - min(f for f, _ in rows)
    print(f"min_cosine={cos.min():.4f} mean_cosine={cos.mean():.4f} max_eval_loss_diff={diff:.4f} "
          f"seed_spread={spread:.4f}")


if __name__ == "__main__":
    main()
