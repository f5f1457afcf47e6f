"""Any causal LM behind the prefix: GPT-2, Llama (SmolLM2), Qwen2, GPT-NeoX (Pythia) and OPT.

Each family is a tiny random model of its own config class, saved to a local folder with a
tokenizer that behaves like the family's (Llama and OPT add a BOS, none has a pad token, the
EOS differs), and loaded by folder through the public API, as a Hub id would be. LoRA (peft)
and gradient checkpointing are checked on the same folders.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import visiontales as vt
from visiontales.model import backbones, lora
from visiontales.model.config import DEFAULT_PROMPT
from visiontales.model.tokens import encode_target

FAMILIES = ("gpt2", "llama", "qwen2", "gpt_neox", "opt")
TINY_CLIP = backbones.TINY_CLIP
SIZE = dict(hidden=32, layers=2, heads=4, ffn=64)


def _tokenizer(family: str, texts):
    """A byte-level BPE trained on ``texts`` with the family's special tokens and habits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    specials, bos, eos, add_bos = {
        "gpt2": (["<|endoftext|>"], "<|endoftext|>", "<|endoftext|>", False),
        "llama": (["<unk>", "<s>", "</s>"], "<s>", "</s>", True),
        "qwen2": (["<|im_start|>", "<|im_end|>", "<|endoftext|>"], None, "<|endoftext|>", False),
        "gpt_neox": (["<|endoftext|>", "<|padding|>"], "<|endoftext|>", "<|endoftext|>", False),
        "opt": (["<s>", "<pad>", "</s>", "<unk>"], "</s>", "</s>", True),
    }[family]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" " + t for t in texts], trainer)
    if add_bos:  # what Llama's and OPT's tokenizers do with add_special_tokens=True
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, bpe.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos)


def _config(family: str, tokenizer, positions: int):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config
    h, n, a, f = SIZE["hidden"], SIZE["layers"], SIZE["heads"], SIZE["ffn"]
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id)
    if family == "gpt2":
        return GPT2Config(n_embd=h, n_layer=n, n_head=a, n_positions=positions, **ids)
    if family == "llama":
        return LlamaConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a, num_key_value_heads=2,
                           intermediate_size=f, max_position_embeddings=positions, tie_word_embeddings=True, **ids)
    if family == "qwen2":
        return Qwen2Config(hidden_size=h, num_hidden_layers=n, num_attention_heads=a, num_key_value_heads=2,
                           intermediate_size=f, max_position_embeddings=positions, **ids)
    if family == "gpt_neox":
        return GPTNeoXConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a, intermediate_size=f,
                             max_position_embeddings=positions, rotary_pct=0.25, **ids)
    return OPTConfig(hidden_size=h, num_hidden_layers=n, num_attention_heads=a, ffn_dim=f,
                     word_embed_proj_dim=h, max_position_embeddings=positions, **ids)


def write_family(family: str, folder: Path, positions: int = 512) -> Path:
    """A tiny random LM of ``family`` and its tokenizer, saved as a Hub-style folder."""
    from transformers import AutoModelForCausalLM
    texts = list(vt.sample_dataset("train").texts) + [DEFAULT_PROMPT]
    tokenizer = _tokenizer(family, texts)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(_config(family, tokenizer, positions))
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lms")
    return {family: write_family(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def data():
    return vt.sample_dataset("train").select(range(8))


def build(lm_dir, seed: int = 0, prefix: str = "sequence") -> vt.StoryModel:
    torch.manual_seed(seed)  # the random tiny CLIP and the prefix mapper
    return vt.StoryModel.from_components(clip=TINY_CLIP, clip_pretrained=None, lm=str(lm_dir),
                                         prefix=prefix, prefix_length=2)


def config(out, **overrides) -> vt.TrainingConfig:
    values = dict(lr=3e-3, batch_size=4, epochs=6, seed=1, log_every=1, progress=False, num_samples=0,
                  eval_every_epoch=False, photo_check=False, save_every=0, output_dir=str(out),
                  cache_dir=str(Path(out) / "cache"))
    return vt.TrainingConfig(**{**values, **overrides})


def stories(model, data, n=2):
    return model.generate([list(data[i]["image_paths"]) for i in range(n)], max_new_tokens=8, progress=False)


# ---- every family through the public API ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_generates_saves_and_reloads(family, family_dirs, data, tmp_path):
    from transformers import AutoModelForCausalLM
    model = build(family_dirs[family])
    history = vt.Trainer(model, data, config=config(tmp_path)).train()
    assert history["loss"].iloc[-3:].mean() < history["loss"].iloc[:2].mean() - 0.5  # it learns
    before = stories(model, data)
    assert all(isinstance(s, str) for s in before)
    saved = model.save_pretrained(tmp_path / "model")
    again = vt.StoryModel.from_pretrained(saved)
    assert stories(again, data) == before
    plain = AutoModelForCausalLM.from_pretrained(saved / "lm")  # no visiontales, no peft
    ids = torch.tensor([[3, 5, 7, 11]])
    model.eval()  # as from_pretrained's: no dropout
    torch.testing.assert_close(plain(ids).logits, model.lm(ids).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_sizes_tokens_and_targets_follow_the_family(family, family_dirs):
    model = build(family_dirs[family])
    assert model.mapper.embed_dim == SIZE["hidden"] == backbones.lm_width(model.lm)
    assert model.max_positions == 512
    tok = model.tokenizer
    prompt = model.prompt_ids()
    assert prompt and tok.bos_token_id not in prompt or tok.bos_token_id == tok.eos_token_id
    ids, labels, _ = encode_target(tok, prompt, "we went to the beach .")
    assert ids[-1] == labels[-1] == tok.eos_token_id  # the family's own EOS ends the target
    assert labels[:len(prompt)] == [-100] * len(prompt)
    features = torch.randn(2, 3, model.mapper.mlp[0].in_features)
    out = model.generate_ids(features, torch.tensor(prompt), max_new_tokens=4)
    assert out.shape[0] == 2 and out.shape[1] <= 4


def test_huge_position_counts_are_capped(tmp_path):
    model = build(write_family("qwen2", tmp_path / "qwen2", positions=131072))
    assert model.max_positions == backbones.MAX_POSITIONS < 131072
    assert model.token_budget(3) == backbones.MAX_POSITIONS - 3 * 2


def test_clip_width_comes_from_the_model(tmp_path, family_dirs):
    """A ``local-dir:`` open_clip tower of another width: the mapper takes that width."""
    from visiontales.utils import read_json, write_json
    cfg = read_json(backbones.TINY_CLIP_CONFIG)
    cfg["embed_dim"] = 48
    folder = tmp_path / "clip48"
    folder.mkdir()
    write_json(folder / "open_clip_config.json", {"model_cfg": cfg, "preprocess_cfg": {}})
    torch.manual_seed(0)
    model = vt.StoryModel.from_components(clip=f"local-dir:{folder}", clip_pretrained=None,
                                          lm=str(family_dirs["llama"]), prefix_length=2)
    assert model.mapper.mlp[0].in_features == 48 == model.feature_mean.numel()


# ---- LoRA --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_lora_trains_a_small_share_and_merges_to_the_same_logits(family_dirs, data, tmp_path):
    from transformers import AutoModelForCausalLM
    model = build(family_dirs["llama"])
    base = {k: v.clone() for k, v in model.lm.state_dict().items()}
    trainer = vt.Trainer(model, data, config=config(tmp_path, lora_r=4, epochs=3))
    history = trainer.train()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    trainable = sum(p.numel() for p in model.lm.parameters() if p.requires_grad)
    assert 0 < trainable < 0.1 * sum(p.numel() for p in model.lm.parameters())
    assert all(p.requires_grad for p in model.mapper.parameters())  # the mapper always trains
    # the base weights did not move; the adapter did
    state = {k.replace(".base_layer.", "."): v for k, v in model.lm.state_dict().items()}
    assert all(torch.equal(state[k], v) for k, v in base.items())
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)
    saved = model.save_pretrained(tmp_path / "model")
    plain = AutoModelForCausalLM.from_pretrained(saved / "lm")
    assert not any("lora" in k for k in plain.state_dict())
    ids = torch.tensor([[3, 5, 7, 11, 13]])
    model.eval()  # no LoRA dropout
    torch.testing.assert_close(plain(ids).logits, model.lm(ids).logits, rtol=1e-5, atol=1e-5)
    assert (saved / lora.ADAPTER_DIR / lora.ADAPTER_WEIGHTS).is_file()
    assert stories(vt.StoryModel.from_pretrained(saved), data) == stories(model, data)


def test_freeze_lm_and_lora_are_exclusive_and_freeze_lm_still_freezes(family_dirs, data, tmp_path):
    with pytest.raises(ValueError, match="choose one"):
        vt.TrainingConfig(lora_r=8, freeze_lm=True)
    model = build(family_dirs["gpt_neox"])
    vt.Trainer(model, data, config=config(tmp_path, freeze_lm=True)).create_optimizer()
    assert not any(p.requires_grad for p in model.lm.parameters())


@pytest.mark.slow
def test_gradient_checkpointing_trains_to_the_same_loss(family_dirs, data, tmp_path):
    runs = {}
    for checkpointing in (False, True):
        model = build(family_dirs["qwen2"])
        trainer = vt.Trainer(model, data, config=config(tmp_path / str(checkpointing), epochs=3,
                                                        gradient_checkpointing=checkpointing))
        runs[checkpointing] = trainer.train()["loss"].to_numpy()
        switch = getattr(type(model.lm), "is_activation_checkpointing", None)  # transformers 5's name
        assert (model.lm.is_activation_checkpointing if switch else model.lm.is_gradient_checkpointing) == checkpointing
    assert abs(runs[True] - runs[False]).max() < 1e-4 and len(runs[True]) == 6


RESUME_SCRIPT = """
import sys, torch
import visiontales as vt
out, lm, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
data = vt.sample_dataset("train").select(range(24))
torch.manual_seed(0)
model = vt.StoryModel.from_components(clip="%s", clip_pretrained=None, lm=lm, prefix_length=2)
config = vt.TrainingConfig(lr=2e-3, batch_size=4, epochs=8, seed=3, save_steps=2, log_every=3, lora_r=4,
                           save_every=0, progress=False, num_samples=0, output_dir=out)
vt.Trainer(model, data, config=config).train(resume_from="latest" if resume else None)
""" % TINY_CLIP


@pytest.mark.slow
def test_lora_sigkill_then_resume_is_bit_identical(family_dirs, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VISIONTALES_CACHE": str(tmp_path / "cache")}

    def start(out, mode):
        return subprocess.Popen([sys.executable, str(script), str(out), str(family_dirs["llama"]), mode],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    straight, killed = start(tmp_path / "straight", "fresh"), start(tmp_path / "killed", "fresh")
    pointer, deadline = tmp_path / "killed" / "latest.json", time.time() + 240
    while time.time() < deadline and killed.poll() is None:  # a mid-epoch checkpoint, epoch 2+
        if pointer.exists():
            step = int(json.loads(pointer.read_text())["checkpoint"].split("step")[1])
            if step >= 10 and step % 6:
                break
        time.sleep(0.05)
    assert killed.poll() is None, "training finished before it could be killed: " + killed.stderr.read()[-500:]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = start(tmp_path / "killed", "resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]

    def weights(run):
        final = Path(run) / "final"
        return {**load_file(str(final / "mapper.safetensors")), **load_file(str(final / "lm" / "model.safetensors")),
                **load_file(str(final / lora.ADAPTER_DIR / lora.ADAPTER_WEIGHTS))}
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    assert not [k for k in a if not torch.equal(a[k], b[k])]


# ---- the command line ----------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_trains_another_family_with_lora(family_dirs, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VISIONTALES_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "visiontales", "train", "--lm", str(family_dirs["opt"]),
                          "--clip", TINY_CLIP, "--clip-pretrained", "none", "--prefix-length", "2",
                          "--lora-r", "4", "--lora-target-modules", "q_proj", "k_proj", "--epochs", "1",
                          "--batch-size", "8", "--gradient-checkpointing", "--num-samples", "0",
                          "--no-progress", "--output-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    adapter = json.loads((tmp_path / "run" / "final" / lora.ADAPTER_DIR / lora.ADAPTER_CONFIG).read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["k_proj", "q_proj"]


def test_cli_hub_id_unavailable_offline_is_one_sentence(tmp_path, capsys):
    from visiontales.app.cli import main
    code = main(["train", "--lm", "nobody-here/no-such-lm", "--clip", TINY_CLIP, "--clip-pretrained", "none",
                 "--epochs", "1", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "'nobody-here/no-such-lm'" in err and "HF_HUB_OFFLINE" in err
