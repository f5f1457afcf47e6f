"""Feature cache: each image is encoded once; a changed file is encoded again."""
import os
import time

import pytest
import torch
from PIL import Image

from visiontales.model import backbones as loading
from visiontales.model.features import FeatureCache, ImageEncoder, file_key


@pytest.fixture
def encoder(tmp_path):
    torch.manual_seed(0)
    clip, preprocess = loading.load_clip(loading.TINY_CLIP, None)
    calls = []
    clip.visual.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    enc = ImageEncoder(clip, preprocess, "tiny-test", cache_dir=tmp_path / "cache", batch_size=2,
                       progress=False)
    enc.calls = calls  # images seen by the vision tower, per batch
    return enc


def _images(tmp_path, n=3):
    paths = []
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 40), (60 * i, 255 - 60 * i, 100)).save(path)
        paths.append(str(path))
    return paths


def _another(encoder, tmp_path, **options) -> ImageEncoder:
    """A second encoder over the same CLIP and cache folder, as a later run builds one."""
    return ImageEncoder(encoder.clip, encoder.preprocess, "tiny-test", cache_dir=tmp_path / "cache",
                        progress=False, **options)


@pytest.mark.parametrize("options", [{}, {"precision": "bf16"}, {"precision": "auto"}, {"num_workers": 2}],
                         ids=["fp32", "bf16", "auto", "workers"])
def test_second_run_reads_the_cache(encoder, tmp_path, options):
    paths = _images(tmp_path)
    first = _another(encoder, tmp_path, batch_size=2, **options).encode(paths + paths[:1])
    assert sum(encoder.calls) == 3                   # a repeated image is encoded once
    assert first.shape == (4, 64)
    assert torch.allclose(first.norm(dim=-1), torch.ones(4), atol=1e-2)  # L2-normalised
    again = _another(encoder, tmp_path, **options).encode(paths)
    assert sum(encoder.calls) == 3                   # no new CLIP work
    assert torch.equal(again, first[:3])             # cold and warm runs agree exactly


def test_encoding_leaves_the_global_random_stream_alone(encoder, tmp_path):
    """A seeded training run must not depend on whether the feature cache was warm."""
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    encoder.encode(_images(tmp_path))                # cold: CLIP runs through a DataLoader
    assert sum(encoder.calls) == 3
    assert torch.equal(torch.rand(3), expected)


def test_changed_file_is_encoded_again(encoder, tmp_path):
    paths = _images(tmp_path)
    before = encoder.encode(paths)
    time.sleep(0.01)
    Image.new("RGB", (40, 40), (0, 0, 255)).save(paths[1])
    os.utime(paths[1], ns=(time.time_ns(), time.time_ns()))
    after = encoder.encode(paths)
    assert sum(encoder.calls) == 4                   # only the changed image
    assert torch.equal(after[0], before[0]) and not torch.equal(after[1], before[1])


def test_other_encoder_identity_does_not_share_features(encoder, tmp_path):
    paths = _images(tmp_path)
    encoder.encode(paths)
    other = FeatureCache(tmp_path / "cache", "another-encoder")
    assert other.get([file_key(p) for p in paths]) == {}


def test_corrupted_cache_is_rebuilt(encoder, tmp_path):
    paths = _images(tmp_path)
    reference = encoder.encode(paths)
    for shard in encoder.cache.shards:
        shard.write_bytes(b"not a safetensors file")
    assert torch.equal(_another(encoder, tmp_path).encode(paths), reference)
    assert sum(encoder.calls) == 6                   # encoded again, not trusted
    assert len(FeatureCache(tmp_path / "cache", "tiny-test")) == 3


def test_shards_from_several_writers_merge_into_one_file(encoder, tmp_path):
    paths = _images(tmp_path, n=4)
    first = encoder.encode(paths[:2])
    second = _another(encoder, tmp_path).encode(paths[2:])
    cache = FeatureCache(tmp_path / "cache", "tiny-test")
    assert len(cache.shards) == 2 and len(cache) == 4
    cache.compact()
    assert [p.name for p in cache.shards] == ["features.safetensors"]
    merged = FeatureCache(tmp_path / "cache", "tiny-test").get([file_key(p) for p in paths])
    assert torch.equal(torch.stack(list(merged.values())), torch.cat([first, second]))


def test_pil_images_are_encoded_but_not_cached(encoder, tmp_path):
    image = Image.new("RGB", (40, 40), (10, 200, 30))
    path = tmp_path / "same.png"
    image.save(path)
    from_pil = encoder.encode([image])
    from_file = encoder.encode([str(path)])
    assert torch.allclose(from_pil, from_file)
    assert len(encoder.cache) == 1


def test_many_small_runs_compact_automatically(tmp_path):
    """A cache fed one image at a time stays a few files, and compaction loses nothing."""
    cache = FeatureCache(tmp_path, "tiny-test", max_shards=4)
    other_process = FeatureCache(tmp_path, "tiny-test")   # writes shards this one never loaded
    for i in range(10):
        (cache if i % 3 else other_process).put({f"img{i}|1|1": torch.full((8,), float(i))})
        assert len(cache.shards) <= 5
    fresh = FeatureCache(tmp_path, "tiny-test")
    assert len(fresh) == 10
    assert [fresh.get([f"img{i}|1|1"])[f"img{i}|1|1"][0].item() for i in range(10)] == list(range(10))


@pytest.mark.parametrize("precision", ["bf16", "auto"])
def test_native_bf16_extraction_casts_a_frozen_copy_of_the_tower(encoder, tmp_path, monkeypatch, precision):
    """bf16 weights (not autocast) where the hardware has bf16; CLIP itself stays fp32, and
    the features stay within float16 rounding plus bf16 noise of the fp32 ones."""
    monkeypatch.setattr("visiontales.model.precision.cpu_has_native_bf16", lambda: True)
    paths = _images(tmp_path, n=4)
    seen = []
    encoder.clip.visual.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].dtype))
    fp32 = ImageEncoder(encoder.clip, encoder.preprocess, "fp32", tmp_path / "a", progress=False).encode(paths)
    bf16_encoder = ImageEncoder(encoder.clip, encoder.preprocess, "bf16", tmp_path / "b", progress=False,
                                precision=precision)
    bf16 = bf16_encoder.encode(paths)
    assert seen == [torch.float32, torch.bfloat16]       # the copy ran in bf16, the original in fp32
    assert all(p.dtype == torch.float32 for p in encoder.clip.parameters())
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() > 0.99
    (tmp_path / "more").mkdir()
    bf16_encoder.encode(_images(tmp_path / "more", n=2))
    assert seen[2:] == [torch.bfloat16]
    assert len(bf16_encoder._towers) == 1                # the copy is made once, then reused


def test_the_model_keeps_its_encoder_between_calls(tmp_path):
    """Repeated encode_images calls share one loaded cache index (never re-read per call)."""
    from visiontales import StoryModel
    model = StoryModel.tiny()
    paths = _images(tmp_path)
    first = model.image_encoder(tmp_path / "cache", progress=False)
    assert model.image_encoder(tmp_path / "cache", progress=False) is first
    model.encode_images(paths, tmp_path / "cache", progress=False)
    verbose = model.image_encoder(tmp_path / "cache", progress=True)
    assert verbose is not first and verbose.cache is first.cache
    model.forget_clip_identity()                          # CLIP weights changed: start over
    assert model.image_encoder(tmp_path / "cache", progress=False) is not first


def test_a_loaded_cache_sees_what_another_process_wrote_since(encoder, tmp_path):
    """DDP ranks and parallel runs: features another writer added are read, not encoded again."""
    paths = _images(tmp_path, n=4)
    encoder.encode(paths[:2])                        # this cache's index is now loaded
    _another(encoder, tmp_path).encode(paths[2:])   # a second writer adds a shard
    assert sum(encoder.calls) == 4
    encoder.encode(paths)
    assert sum(encoder.calls) == 4                   # nothing encoded twice
