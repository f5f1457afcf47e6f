"""Feature extraction throughput: images per second into the on-disk cache.

Full-size CLIP ViT-B/32 (random weights: the compute of OpenAI's), the shipped sample
images, a fresh cache every run, files decoded in a DataLoader worker while CLIP encodes,
batch 64, precision "auto" (bf16 autocast where the CPU or GPU has it natively). For
context it also times the naive way: one image at a time, fp32, decoding in the loop.
The last line is ``img_per_s=<x>``.

    python benchmarks/extract_throughput.py [--images 256] [--workers 1] [--device auto]
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from common import full_size_model, machine, median_rate

import visiontales as vt
from visiontales.data import load_image
from visiontales.features import ImageEncoder
from visiontales.precision import resolve_precision
from visiontales.utils import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = full_size_model().to(device).eval()
    paths = (vt.sample_dataset("train").image_paths + vt.sample_dataset("val").image_paths)[:args.images]
    print(f"machine: {machine()}; precision {args.precision} -> "
          f"{resolve_precision(args.precision, device) or torch.float32}")

    def library():
        encoder = ImageEncoder(model.clip, model.preprocess, "bench", cache_dir=tempfile.mkdtemp(),
                               batch_size=64, progress=False, num_workers=args.workers,
                               precision=args.precision)
        encoder.encode(paths)

    def naive():
        with torch.no_grad():
            for p in paths[:32]:
                model.clip.encode_image(model.preprocess(load_image(p))[None].to(device))

    naive_rate = median_rate(naive, 32, repeats=3, steps=1, warmup=1)
    rate = median_rate(library, len(paths), repeats=3, steps=1, warmup=1)
    print(f"naive    {naive_rate:7.1f} img/s (one at a time, fp32)")
    print(f"library  {rate:7.1f} img/s (ratio {rate / naive_rate:.2f})")
    print(f"img_per_s={rate:.1f}")


if __name__ == "__main__":
    main()
