"""train_clip_blocks: the image tower's last blocks train at their own learning rate, the cache
holds the frozen trunk below them, and every feature afterwards goes through the tuned blocks."""
import pytest
import torch
from safetensors.torch import load_file

import visiontales as vt
from visiontales.model.tower import TowerOutput, joint_embeddings


@pytest.fixture(scope="module")
def small():
    return vt.sample_dataset("train").select(range(12))


def _config(tmp_path, **kw):
    base = dict(lr=2e-3, clip_lr=1e-3, batch_size=4, epochs=2, progress=False, num_samples=0, log_every=1,
                output_dir=str(tmp_path / "run"), seed=7, train_clip_blocks=1, cache_dir=str(tmp_path / "cache"))
    return vt.TrainingConfig(**{**base, **kw})


def _blocks(model):
    return [{k: v.clone() for k, v in block.state_dict().items()} for block in model.clip.visual.transformer.resblocks]


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory):
    """A sequence model whose last image-tower block trained, and the same model untrained."""
    tmp_path = tmp_path_factory.mktemp("tuned")
    model = vt.StoryModel.tiny(vocab_from=small, prefix="sequence")
    before = _blocks(model)
    trainer = vt.Trainer(model, small, config=_config(tmp_path))
    trainer.train()
    return model, before, trainer, tmp_path


def test_the_last_block_trains_and_the_first_does_not(trained):
    model, before, trainer, _ = trained
    first, last = _blocks(model)
    assert all(torch.equal(first[k], before[0][k]) for k in first)
    assert any(not torch.equal(last[k], before[1][k]) for k in last)
    assert model.config.clip_tuned_blocks == 1 and not any(p.requires_grad for p in model.clip.visual.ln_post.parameters())
    clip_groups = [g for g in trainer.optimizer.param_groups if g["initial_lr"] == 1e-3]
    tuned = {id(p) for p in model.clip.visual.transformer.resblocks[1].parameters()}
    assert {id(p) for g in clip_groups for p in g["params"]} == tuned


def test_features_after_training_go_through_the_tuned_block(trained, small):
    model, _, _, tmp_path = trained
    frozen = vt.StoryModel.tiny(vocab_from=small, prefix="sequence")  # the same tower, untrained
    paths = list(small[0]["image_paths"])
    tuned, untouched = joint_embeddings(model, paths), joint_embeddings(frozen, paths)
    assert not torch.allclose(tuned, untouched, atol=1e-3)
    # the cache holds the frozen trunk's tokens, shared with the untrained model's cut tower
    trunk = model.encode_images(paths, cache_dir=tmp_path / "cache")
    pixels = torch.stack([model.preprocess(vt.data.images.load_rgb(p)) for p in paths])
    assert torch.allclose(trunk, TowerOutput(None, 1).cached(frozen.clip.visual, pixels), atol=1e-2)
    direct = torch.nn.functional.normalize(model.clip.encode_image(pixels), dim=-1)  # the whole tuned tower
    assert torch.allclose(tuned, direct, atol=1e-2)


def test_a_saved_tuned_model_reloads_with_the_same_stories(trained, small):
    model, _, _, tmp_path = trained
    folder = model.save_pretrained(tmp_path / "saved")
    weights = load_file(str(folder / "mapper.safetensors"))
    assert torch.equal(weights["clip.visual.transformer.resblocks.1.attn.in_proj_weight"],
                       model.clip.visual.transformer.resblocks[1].attn.in_proj_weight)
    again = vt.StoryModel.from_pretrained(folder)
    sequences = [list(small[i]["image_paths"]) for i in (0, 5)]
    assert again.config.clip_tuned_blocks == 1
    assert again.generate(sequences, max_new_tokens=8) == model.generate(sequences, max_new_tokens=8)


def test_resume_with_a_tuned_block_is_bit_identical(small, tmp_path):
    straight = vt.StoryModel.tiny(vocab_from=small, prefix="patches")
    history = vt.Trainer(straight, small, config=_config(tmp_path / "a", save_every=1)).train()
    resumed = vt.StoryModel.tiny(vocab_from=small, prefix="patches", seed=123)  # the checkpoint must win
    again = vt.Trainer(resumed, small, config=_config(tmp_path / "a", save_every=1))
    assert again.train(resume_from="latest")["loss"].tolist() == history["loss"].tolist()
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_where_it_does_not_fit_the_error_says_so(small):
    with pytest.raises(ValueError, match="between 0 and 1"):
        vt.Trainer(vt.StoryModel.tiny(vocab_from=small), small, config=vt.TrainingConfig(train_clip_blocks=2))
    with pytest.raises(ValueError, match="train_clip_blocks"):
        vt.TrainingConfig(train_clip_blocks=-1)
    with pytest.raises(ValueError, match="VisionTransformer"):
        TowerOutput(None, 1).check(torch.nn.Conv2d(3, 8, 3))
