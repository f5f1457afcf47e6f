"""Other language models behind the prefix: training throughput and peak memory, full
fine-tuning against LoRA r=8, and what gradient checkpointing saves.

GPT-2 124M, SmolLM2-135M, Qwen2.5-0.5B and Pythia-160M at full size, built from their configs
(written below from the published ones; random weights, nothing downloaded), behind CLIP
ViT-B/32 (random weights, QuickGELU) with the paper's mean prefix of 10 tokens. GPT-2's real
tokenizer (offline, from the BPE ranks openai-whisper ships) stands in for every family's own,
so prompts and stories have real lengths; SmolLM2's embedding therefore has GPT-2's 50,257
rows instead of its 49,152 (+0.5% parameters). Training runs the Trainer's own loop
(``Trainer.training_step`` + ``Trainer.optimizer_step``) on batches of the shipped sample
stories; each configuration runs in its own process (clean peak memory: the process's peak
RSS on CPU, ``max_memory_allocated`` on CUDA). ``--quick``: the same four families at a tiny
size, the tiny CLIP, two steps: a smoke run the tests execute.

    python benchmarks/backbones.py [--batch-size 8] [--steps 3] [--device auto] [--quick]
"""
from __future__ import annotations

import functools
import json
import tempfile

import torch

from common import benchmark_parser, device_of, machine, median_rate, peak_memory_mb, run_isolated

import visiontales as vt
from visiontales.model.backbones import TINY_CLIP, load_clip
from visiontales.model.config import StoryModelConfig
from visiontales.model.tokens import gpt2_tokenizer

# the published configs' sizes (config.json of each Hub repo), by transformers model_type
LMS = {
    "GPT-2 124M": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024)),
    "SmolLM2-135M": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                                   rope_theta=100000.0, tie_word_embeddings=True, vocab_size=49152)),
    "Qwen2.5-0.5B": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                                   rope_theta=1000000.0, tie_word_embeddings=True, vocab_size=151936)),
    "Pythia-160M": ("gpt_neox", dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, max_position_embeddings=2048, rotary_pct=0.25,
                                     use_parallel_residual=True, tie_word_embeddings=False, vocab_size=50304)),
}
QUICK = dict(n_embd=64, n_layer=2, n_head=4, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)
MODES = {"full": dict(), "lora-r8": dict(lora_r=8), "full+ckpt": dict(gradient_checkpointing=True)}


def build_lm(name: str, tokenizer, quick: bool):
    """The LM ``name`` at full size (or tiny with ``quick``), random weights, from its config."""
    from transformers import AutoConfig, AutoModelForCausalLM
    model_type, sizes = LMS[name]
    if quick:
        sizes = {**sizes, **{k: v for k, v in QUICK.items() if k in sizes}}
    vocab = max(sizes.get("vocab_size", 0), len(tokenizer))  # GPT-2's tokenizer must fit
    config = AutoConfig.for_model(model_type, **{**sizes, "vocab_size": vocab},
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    return AutoModelForCausalLM.from_config(config)


@functools.cache
def _tokenizer():
    return gpt2_tokenizer()


def build_model(name: str, quick: bool, seed: int = 0) -> vt.StoryModel:
    clip_name = TINY_CLIP if quick else "ViT-B-32-quickgelu"
    tokenizer = _tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip, preprocess = load_clip(clip_name, None)
        lm = build_lm(name, tokenizer, quick)
        config = StoryModelConfig(clip=clip_name, clip_pretrained=None, lm=f"{name} (random)", prefix="mean",
                                  prefix_length=4 if quick else 10)
        return vt.StoryModel(clip, preprocess, lm, tokenizer, config)


def measure(name: str, mode: str, args) -> dict:
    device = device_of(args)
    model = build_model(name, args.quick)
    data = vt.sample_dataset("train").select(range(2 * args.batch_size if args.quick else 48))
    config = vt.TrainingConfig(batch_size=args.batch_size, progress=False, device=str(device),
                               output_dir=tempfile.mkdtemp(), **MODES[mode])
    trainer = vt.Trainer(model, data, config=config)
    trainer.train_data = trainer.prepare(data)  # CLIP runs here, once, outside the timed steps
    model.fit_feature_stats(torch.cat(trainer.train_data.features))
    trainer.optimizer = trainer.create_optimizer()  # LoRA and checkpointing switched on here
    trainer.scheduler = trainer.create_scheduler(trainer.optimizer)
    model.to(device).train()
    batches = list(trainer.epoch_batches(trainer.train_data, epoch=0))
    state = {"i": 0}

    def step() -> int:
        batch = dict(batches[state["i"] % len(batches)])
        state["i"] += 1
        size = len(batch["index"])
        trainer.training_step(model, batch)
        trainer.optimizer_step()
        return size
    repeats, steps = (1, 1) if args.quick else (3, args.steps)
    rate = median_rate(step, repeats, steps, warmup=1)
    lm_params = sum(p.numel() for n, p in model.lm.named_parameters() if "lora_" not in n)
    trainable = sum(p.numel() for p in model.lm.parameters() if p.requires_grad)
    return {"lm": name, "mode": mode, "seq_per_s": rate, "peak_mem_mb": peak_memory_mb(device),
            "lm_params_m": lm_params / 1e6, "lm_trainable_share": trainable / lm_params}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per timed window (3 windows)")
    parser.add_argument("--lms", nargs="+", default=list(LMS), choices=list(LMS), metavar="LM")
    parser.add_argument("--one", nargs=2, metavar=("LM", "MODE"), help="(internal) one configuration")
    args = parser.parse_args()
    if args.one:  # child process: one configuration, one JSON line
        print(json.dumps(measure(*args.one, args)))
        return
    print(machine(device_of(args), "fp32"), flush=True)
    common = ["--device", args.device, "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    print(f"{'language model':14s} {'mode':10s} {'LM params':>9s} {'trained':>8s} {'seq/s':>7s} {'peak MB':>8s}")
    results = {}
    for name in args.lms:
        for mode in MODES:
            # each configuration in its own process for clean peak memory; --quick stays in this one
            r = measure(name, mode, args) if args.quick else run_isolated(__file__, ["--one", name, mode, *common])
            results[name, mode] = r
            print(f"{name:14s} {mode:10s} {r['lm_params_m']:8.1f}M {100 * r['lm_trainable_share']:7.2f}% "
                  f"{r['seq_per_s']:7.2f} {r['peak_mem_mb']:8.0f}", flush=True)
    lora = [results[n, "lora-r8"]["seq_per_s"] / results[n, "full"]["seq_per_s"] for n in args.lms]
    saved = [results[n, "full"]["peak_mem_mb"] - results[n, "full+ckpt"]["peak_mem_mb"] for n in args.lms]
    print(f"lora_speed_ratio={sum(lora) / len(lora):.2f} ckpt_saving_mb={sum(saved) / len(saved):.0f}")


if __name__ == "__main__":
    main()
