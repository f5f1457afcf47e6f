"""Feature extraction throughput: images per second into the on-disk cache.

CLIP ViT-B/32 (full size, random weights: the compute of OpenAI's), the shipped sample
images, a fresh cache every run, public API only (``StoryModel.image_encoder``): files
decoded in a DataLoader worker while CLIP encodes, batch 64, precision "auto". Measured in
the same run for reference: a plain fp32 forward of the image tower on already decoded,
preprocessed pixels (batch 64: what extraction would cost with free decoding), and the
naive way (one image at a time, fp32, decoding in the loop). The first line says what the
machine is; the last line is ``img_per_s=<library>``.

    python benchmarks/extract_throughput.py [--images 256] [--workers 1] [--device auto] [--quick]
"""
from __future__ import annotations

import tempfile

import torch

from common import benchmark_parser, build_model, device_of, machine, median_rate

import visiontales as vt
from visiontales.data.images import load_image


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    args = parser.parse_args()
    if args.quick:
        args.images = min(args.images, 16)
    device = device_of(args)
    model = build_model(args.quick).to(device).eval()
    paths = (vt.sample_dataset("train").image_paths + vt.sample_dataset("val").image_paths)[:args.images]
    print(machine(device, args.precision), flush=True)
    pixels = torch.stack([model.preprocess(load_image(p)) for p in paths]).to(device)

    def library() -> int:
        encoder = model.image_encoder(tempfile.mkdtemp(), batch_size=64, progress=False,  # a fresh cache:
                                      num_workers=args.workers, precision=args.precision)  # all encoded
        encoder.encode(paths)
        return len(paths)

    @torch.no_grad()
    def plain_forward() -> int:
        for start in range(0, len(pixels), 64):
            model.clip.encode_image(pixels[start:start + 64])
        return len(pixels)

    @torch.no_grad()
    def naive() -> int:
        for p in paths[:32]:
            model.clip.encode_image(model.preprocess(load_image(p))[None].to(device))
        return min(32, len(paths))

    repeats = 1 if args.quick else 3
    rates = {name: median_rate(fn, repeats=repeats, steps=1, warmup=1)
             for name, fn in (("naive", naive), ("plain fp32 forward", plain_forward), ("library", library))}
    print(f"naive               {rates['naive']:7.1f} img/s (one at a time, fp32, decoding in the loop)")
    print(f"plain fp32 forward  {rates['plain fp32 forward']:7.1f} img/s (batch 64, pixels ready, no cache)")
    print(f"library             {rates['library']:7.1f} img/s ({rates['library'] / rates['plain fp32 forward']:.2f}x "
          f"the plain forward, {rates['library'] / rates['naive']:.2f}x naive)")
    print(f"img_per_s={rates['library']:.1f}")


if __name__ == "__main__":
    main()
