"""StoryModel: loss masking, prefix conditioning, generation modes, save/load."""
import pytest
import torch
from transformers import AutoModelForCausalLM

import visiontales as vt
from visiontales.data.images import load_image
from visiontales.model import backbones
from visiontales.model.tokens import collate, encode_targets


@pytest.fixture(scope="module")
def data():
    return vt.sample_dataset("val")


@pytest.fixture(scope="module", params=["mean", "sequence"])
def model(request, data):
    return vt.StoryModel.tiny(vocab_from=vt.sample_dataset("train"), prefix=request.param)


def _batch(model, data, n=3):
    rows = data.frame.head(n)
    batch = collate(encode_targets(model.tokenizer, model.prompt_ids(), list(rows["text"])),
                    model.tokenizer.eos_token_id)
    flat = [p for paths in rows["image_paths"] for p in paths]
    batch["features"] = model.encode_images(flat).view(n, 3, -1)
    return batch


def test_loss_counts_only_target_tokens(model, data):
    batch = _batch(model, data)
    out = model(**batch)
    prefix_len = model.mapper.num_tokens(3)
    logits = out.logits[:, prefix_len:][:, :-1]          # predictions for input positions 1..T-1
    targets = batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               targets.reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, manual, atol=1e-5)
    assert out.logits.shape[1] == prefix_len + batch["input_ids"].shape[1]


def test_the_images_change_the_prediction(model, data):
    batch = _batch(model, data)
    shuffled = dict(batch, features=batch["features"].roll(1, dims=0))
    with torch.no_grad():
        assert not torch.allclose(model(**batch).logits, model(**shuffled).logits)


def test_sequence_prefix_sees_order_and_mean_prefix_does_not(model, data):
    batch = _batch(model, data)
    reordered = dict(batch, features=batch["features"].flip(1))
    with torch.no_grad():
        same = torch.allclose(model(**batch).logits, model(**reordered).logits, atol=1e-5)
    assert same == (model.config.prefix == "mean")


DECODING = {"greedy": {}, "beam": {"num_beams": 3},
            "sample": {"do_sample": True, "top_p": 0.9, "temperature": 1.5, "seed": 3}}


@pytest.mark.parametrize("decoding", list(DECODING))
def test_generation_modes(model, data, decoding):
    sequences = [list(p) for p in data.frame["image_paths"].head(3)]
    kwargs = dict(DECODING[decoding], max_new_tokens=12, progress=False)
    stories = model.generate(sequences, **kwargs)
    assert len(stories) == 3 and all(isinstance(s, str) for s in stories)
    assert model.generate(sequences, **kwargs) == stories     # repeatable (sampling: by its seed)
    if decoding != "sample":  # batching is invisible: one at a time gives the same stories
        assert [model.generate([s], **kwargs)[0] for s in sequences] == stories
    if decoding == "greedy":  # (an untrained model's beams and samples re-tokenise longer)
        assert all(len(model.tokenizer(s)["input_ids"]) <= 14 for s in stories)
    assert "<|endoftext|>" not in " ".join(stories)


def test_generate_accepts_pil_images_and_rejects_flat_lists(model, data):
    paths = list(data[0]["image_paths"])
    from_pil = model.generate([[load_image(p) for p in paths]], max_new_tokens=8)
    assert from_pil == model.generate([paths], max_new_tokens=8)
    with pytest.raises(TypeError, match="list of sequences"):
        model.generate(paths)


def test_save_and_load_round_trip(model, data, tmp_path):
    with torch.no_grad():
        model.mapper.mlp[0].bias.add_(0.5)  # weights that differ from a fresh init
    model.fit_feature_stats(torch.randn(20, model.feature_mean.numel()))
    folder = model.save_pretrained(tmp_path / "m")
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"visiontales_config.json", "mapper.safetensors", "lm/config.json",
            "clip/open_clip_config.json", "clip/open_clip_model.safetensors"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # no pickles
    loaded = vt.StoryModel.from_pretrained(folder)
    sequences = [list(p) for p in data.frame["image_paths"].head(3)]
    assert loaded.generate(sequences, max_new_tokens=10) == model.generate(sequences, max_new_tokens=10)
    assert torch.equal(loaded.feature_std, model.feature_std)
    assert loaded.config == model.config
    plain = AutoModelForCausalLM.from_pretrained(folder / "lm")   # the GPT-2 part is standard
    assert torch.equal(plain.lm_head.weight, model.lm.lm_head.weight)


def test_clip_is_frozen_and_stays_in_eval(model):
    model.train()
    assert not model.clip.training
    assert not any(p.requires_grad for p in model.clip.parameters())
    model.eval()


def test_missing_weights_give_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(vt.WeightsUnavailableError, match="StoryModel.tiny") as err:
        vt.StoryModel.from_components(clip="ViT-B-32", clip_pretrained="openai", lm="gpt2",
                                      cache_dir=str(tmp_path / "empty-clip-cache"))
    assert "\n" not in str(err.value)
    with pytest.raises(vt.WeightsUnavailableError, match="language model 'gpt2'"):
        backbones.load_lm("gpt2")


def test_openai_weights_get_quick_gelu():
    assert backbones.needs_quick_gelu("ViT-B-32", "openai")
    assert not backbones.needs_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")
    assert not backbones.needs_quick_gelu("ViT-B-32", None)


def test_from_pretrained_names_a_wrong_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="visiontales model folder"):
        vt.StoryModel.from_pretrained(tmp_path)


def test_fast_loss_equals_the_full_forward_loss(model, data):
    batch = _batch(model, data)
    with torch.no_grad():
        assert torch.allclose(model.loss(**batch), model(**batch).loss, atol=1e-5)


def test_a_tampered_config_is_refused(model, tmp_path):
    import json
    folder = model.save_pretrained(tmp_path / "m")
    config = json.loads((folder / "visiontales_config.json").read_text())
    config["visiontales"]["prefix_length"] = "ten"
    (folder / "visiontales_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="wrong type"):
        vt.StoryModel.from_pretrained(folder)
    (folder / "visiontales_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        vt.StoryModel.from_pretrained(folder)
