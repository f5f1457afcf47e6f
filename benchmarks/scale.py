"""VIST at full scale: loading, the feature cache and the Trainer's data preparation.

A synthetic set the size of VIST's train split, in its SIS format: 40,155 stories of 5
photos, five stories per album over 21 photos (neighbouring stories share a photo), so
~168k photo files (each the same tiny JPEG) in ~8k albums; sentences recycled from the
shipped sample stories. Then, through the public API:

  1. ``load_vist`` on it: seconds and the process's peak RSS so far;
  2. a feature cache for every photo, 512-d like ViT-B/32's, written through the cache's
     own API (``FeatureCache.put``) in 40 runs, as many extraction runs would write it: this
     measures the cache, not CLIP. Its size on disk and its number of files (compaction
     keeps it to a few), and the seconds a fresh model takes to look up one training
     epoch's features (every window's photos, the cache read from disk);
  3. ``Trainer.prepare`` on the whole set with another fresh model: seconds and peak RSS.

The tiny offline model stands in for the real one (its CLIP never runs here: every photo
is already in the cache). The first line says what the machine is; the last line is
``load_s=... cache_mb=... lookup_s=... prepare_s=... peak_rss_gb=... cache_files=...``.

    python benchmarks/scale.py [--stories 40155] [--workdir DIR] [--quick]
"""
from __future__ import annotations

import io
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from common import benchmark_parser, device_of, machine

import visiontales as vt
from visiontales.model.features import file_key

STORIES_PER_ALBUM, PHOTOS_PER_ALBUM, PHOTOS_PER_STORY = 5, 21, 5


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def write_vist(root: Path, stories: int) -> tuple[Path, Path]:
    """A VIST-format SIS file and its image folder with ``stories`` stories."""
    images = root / "images"
    images.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 140, 200)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()
    sentences = [t for text in vt.sample_dataset("train").texts for t in text.split(" . ") if t]
    albums = -(-stories // STORIES_PER_ALBUM)
    photo_records, album_records, annotations = [], [], []
    for a in range(albums):
        album_id = str(72157600000000000 + a)
        photos = [str(10**9 + a * PHOTOS_PER_ALBUM + i) for i in range(PHOTOS_PER_ALBUM)]
        album_records.append({"id": album_id, "vist_label": "synthetic", "title": "", "description": ""})
        for photo in photos:
            (images / f"{photo}.jpg").write_bytes(jpeg)
            photo_records.append({"id": photo, "album_id": album_id, "title": "", "url_o": ""})
        for s in range(min(STORIES_PER_ALBUM, stories - a * STORIES_PER_ALBUM)):
            story_id = str(a * STORIES_PER_ALBUM + s)
            for order in range(PHOTOS_PER_STORY):   # story s uses photos 4s..4s+4
                text = sentences[(int(story_id) * PHOTOS_PER_STORY + order) % len(sentences)] + " ."
                annotations.append([{"story_id": story_id, "album_id": album_id, "text": text,
                                     "original_text": text, "photo_flickr_id": photos[4 * s + order],
                                     "worker_arranged_photo_order": order, "tier": "story-in-sequence",
                                     "storylet_id": f"{story_id}-{order}", "setting": "", "worker_id": ""}])
    sis = root / "train.story-in-sequence.json"
    sis.write_text(json.dumps({"info": {}, "type": "story-in-sequence", "albums": album_records,
                               "images": photo_records, "annotations": annotations}))
    return sis, images


def fill_cache(model: vt.StoryModel, cache_dir: Path, photos: list[str], runs: int = 40) -> None:
    """512-d features for every photo, put in ``runs`` separate writes (one shard each)."""
    cache = model.image_encoder(cache_dir, progress=False).cache
    keys = [file_key(p) for p in photos]
    generator = torch.Generator().manual_seed(0)
    size = -(-len(keys) // runs)
    for start in range(0, len(keys), size):
        chunk = keys[start:start + size]
        features = torch.nn.functional.normalize(torch.randn(len(chunk), 512, generator=generator), dim=-1)
        cache.put(dict(zip(chunk, features)))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--stories", type=int, default=40_155, help="VIST's train split has 40,155")
    parser.add_argument("--workdir", help="where the synthetic set goes (default: a temporary folder)")
    args = parser.parse_args()
    if args.quick:
        args.stories = min(args.stories, 200)
    device = device_of(args)
    print(machine(device, "fp32"), flush=True)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="vist-scale-"))
    start = time.perf_counter()
    sis, images = write_vist(root, args.stories)
    print(f"wrote {args.stories:,} stories and {len(list(images.iterdir())):,} photos "
          f"in {time.perf_counter() - start:.0f} s", flush=True)

    start = time.perf_counter()
    dataset = vt.load_vist(sis, images, progress=False)
    load_s, load_rss = time.perf_counter() - start, peak_rss_gb()
    print(f"load_vist      {load_s:6.1f} s   {len(dataset):,} windows, {len(dataset.skipped)} skipped; "
          f"peak RSS {load_rss:.2f} GB", flush=True)

    cache_dir = root / "cache"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = vt.StoryModel.tiny(vocab_from=dataset.texts[:2000])
    fill_cache(model, cache_dir, sorted(set(dataset.image_paths)))
    files = [p for p in cache_dir.rglob("*.safetensors")]
    cache_mb = sum(p.stat().st_size for p in files) / 2**20
    print(f"feature cache  {cache_mb:6.0f} MB in {len(files)} file(s) after 40 writes", flush=True)

    fresh = vt.StoryModel.tiny(vocab_from=dataset.texts[:2000])  # same weights: same cache identity
    window_photos = [p for seq in dataset.frame["image_paths"] for p in seq]
    start = time.perf_counter()
    epoch = fresh.encode_images(window_photos, cache_dir, progress=False)
    lookup_s = time.perf_counter() - start
    print(f"epoch lookup   {lookup_s:6.1f} s   {tuple(epoch.shape)} features of {len(dataset):,} windows", flush=True)
    del epoch, fresh

    config = vt.TrainingConfig(device=str(device), cache_dir=str(cache_dir), progress=False,
                               output_dir=str(root / "run"))
    trainer = vt.Trainer(vt.StoryModel.tiny(vocab_from=dataset.texts[:2000]), dataset, config=config)
    start = time.perf_counter()
    prepared = trainer.prepare(dataset)
    prepare_s, peak = time.perf_counter() - start, peak_rss_gb()
    print(f"Trainer.prepare {prepare_s:5.1f} s   {len(prepared):,} examples; peak RSS {peak:.2f} GB", flush=True)
    print(f"load_s={load_s:.1f} cache_mb={cache_mb:.0f} lookup_s={lookup_s:.1f} prepare_s={prepare_s:.1f} "
          f"peak_rss_gb={peak:.2f} cache_files={len(files)}")


if __name__ == "__main__":
    main()
