"""The patches prefix: patch tokens pooled to a grid, cached once per image, read by learned
queries per photo; and the image tower cut below its tuned blocks gives the same features."""
import pytest
import torch

import visiontales as vt
from visiontales.model.backbones import TINY_CLIP, load_clip
from visiontales.model.resampler import PatchResampler
from visiontales.model.tower import TowerOutput, pool_grid


@pytest.fixture(scope="module")
def visual():
    return load_clip(TINY_CLIP, None)[0].visual


@pytest.mark.parametrize("grid", [None, 1, 2, 4])
def test_the_cut_tower_gives_the_frozen_towers_features(visual, grid):
    pixels = torch.randn(3, 3, 64, 64)
    frozen = TowerOutput(grid).cached(visual, pixels)
    cut = TowerOutput(grid, tuned_blocks=1)
    trunk = cut.cached(visual, pixels)  # (B, 1 + 16, W): class token and 4 x 4 patches
    assert trunk.shape == (3, 17, 64) and frozen.shape[1:] == ((64,) if grid is None else (1 + grid * grid, 64))
    assert torch.allclose(cut.finish(visual, trunk), frozen, atol=1e-6)
    assert torch.allclose(frozen.norm(dim=-1), torch.ones(frozen.shape[:-1]))


def test_patch_tokens_are_open_clips_own_pooled_to_the_grid(visual):
    pixels = torch.randn(2, 3, 64, 64)
    visual.output_tokens = True  # open_clip's own switch: (pooled, patch tokens)
    try:
        pooled, tokens = visual(pixels)  # (B, 16, W) for the tiny tower's 4 x 4 patches
    finally:
        visual.output_tokens = False
    features = TowerOutput(2).cached(visual, pixels)  # (B, 1 + 2 * 2, W)
    assert features.shape == (2, 5, 64)
    top_left = tokens.view(2, 4, 4, -1)[:, :2, :2].mean(dim=(1, 2))
    assert torch.allclose(features[:, 1], torch.nn.functional.normalize(top_left, dim=-1), atol=1e-6)
    # the class token after the final norm is what the tower pools and projects
    assert torch.allclose(features[:, 0], torch.nn.functional.normalize(pooled @ torch.linalg.pinv(visual.proj),
                                                                       dim=-1), atol=1e-4)
    assert torch.equal(pool_grid(tokens, 4), tokens)
    with pytest.raises(ValueError, match="finer than"):
        pool_grid(tokens, 5)


def test_each_photos_block_reads_only_its_own_patches():
    torch.manual_seed(0)
    resampler = PatchResampler(feature_dim=8, embed_dim=16, prefix_length=2, num_patches=4)
    features = torch.randn(2, 3, 4, 8)
    changed = features.clone()
    changed[:, 2] += 1.0  # the third photo only
    before, after = resampler(features), resampler(changed)
    assert before.shape == (2, 6, 16)
    assert torch.equal(before[:, :4], after[:, :4]) and not torch.allclose(before[:, 4:], after[:, 4:])
    swapped = resampler(features[:, [1, 0, 2]])  # the same photo at another place: another position
    assert not torch.allclose(swapped[:, 2:4], before[:, :2])


def test_a_patches_model_caches_each_image_once_and_trains(tmp_path, capsys):
    data = vt.sample_dataset("train").select(range(6))
    model = vt.StoryModel.tiny(vocab_from=data, prefix="patches", patch_grid=2)
    mean_model = vt.StoryModel.tiny(vocab_from=data)  # the same CLIP weights
    assert model.clip_identity != mean_model.clip_identity  # other features, other cache entries
    paths = list(data[0]["image_paths"])
    features = model.encode_images(paths, cache_dir=tmp_path)
    assert features.shape == (3, 5, 64)
    assert "0.6 KiB per image (5 x 64 float16)" in capsys.readouterr().err
    cfg = vt.TrainingConfig(epochs=2, batch_size=3, lr=2e-3, progress=False, num_samples=0,
                            output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path))
    history = vt.Trainer(model, data, config=cfg).train()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert model.feature_mean.shape == (5, 64)  # statistics of each token: class token, 2 x 2 grid
    assert model.mapper.num_tokens(3) == 3 * model.config.prefix_length
    again = vt.StoryModel.from_pretrained(tmp_path / "run" / "final")
    assert again.config.prefix == "patches" and again.config.patch_grid == 2
    assert again.generate([paths], max_new_tokens=6) == model.generate([paths], max_new_tokens=6)


def test_patches_need_a_vision_transformer():
    with pytest.raises(ValueError, match="VisionTransformer"):
        TowerOutput(4).check(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="prefix mode"):
        vt.StoryModel.tiny(prefix="patch")
