"""Feature cache size per image: the pooled features, the patches grid, the trunk below tuned blocks.

For each setting the model encodes 40 sample images into an empty cache (which prints what
one image costs and what VIST's ~210k images would) and the ``.safetensors`` files are
summed. Full size: CLIP ViT-B/32 with random weights (the sizes do not depend on them).
The last line is ``kib_per_image=<pooled> kib_patches=<patches> kib_trunk=<trunk>``.

    python benchmarks/cache_size.py [--quick]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from common import benchmark_parser, build_model, device_of, machine

import visiontales as vt
from visiontales.model.tower import tune_clip_blocks

SETTINGS = (("mean", 0), ("patches", 0), ("sequence", 1))


def main() -> None:
    args = benchmark_parser(__doc__).parse_args()
    print(machine(device_of(args)), flush=True)
    paths = vt.sample_dataset("train").image_paths[:40]
    sizes = []
    for prefix, blocks in SETTINGS:
        model = build_model(args.quick, prefix=prefix).to(device_of(args))
        tune_clip_blocks(model, blocks)
        with tempfile.TemporaryDirectory() as cache:
            model.encode_images(paths, cache_dir=cache, progress=True)  # prints the cache's line
            size = sum(f.stat().st_size for f in Path(cache).rglob("*.safetensors")) / len(paths) / 1024
        sizes.append(size)
        print(f"{prefix} train_clip_blocks={blocks}: {size:.1f} KiB per image on disk "
              f"({len(paths)} images, keys included)", flush=True)
    print(" ".join(f"{name}={size:.1f}" for name, size in zip(("kib_per_image", "kib_patches", "kib_trunk"), sizes)))


if __name__ == "__main__":
    main()
