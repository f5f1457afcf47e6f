"""Shared pieces of the benchmarks: the models, the machine line, timing, peaks.

Full size: CLIP ViT-B/32 (QuickGELU, as OpenAI's) + GPT-2 124M with random weights (the
compute of the pretrained ones, no download) and GPT-2's real tokenizer (offline, from the
BPE ranks openai-whisper ships), so prompts and stories have the lengths real users get.
``--quick``: the tiny offline model, a few steps: a smoke run the tests execute.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import visiontales as vt
from visiontales.model.backbones import load_clip
from visiontales.model.story_model import StoryModelConfig
from visiontales.model.precision import cpu_has_native_bf16, resolve_precision
from visiontales.model.tokens import gpt2_tokenizer
from visiontales.utils import resolve_device

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true",
                        help="tiny model, a few steps: checks the script runs, its numbers mean little")
    return parser


def build_model(quick: bool, prefix: str = "mean", seed: int = 0) -> vt.StoryModel:
    """The full-size model with random weights, or with ``quick`` the tiny offline one."""
    if quick:
        return vt.StoryModel.tiny(seed=seed, prefix=prefix)
    from transformers import GPT2Config, GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip, preprocess = load_clip("ViT-B-32-quickgelu", None)
        lm = GPT2LMHeadModel(GPT2Config())  # GPT-2 124M; EOS 50256 as the real tokenizer
    config = StoryModelConfig(clip="ViT-B-32-quickgelu", clip_pretrained=None, lm="gpt2-random",
                              prefix=prefix)
    return vt.StoryModel(clip, preprocess, lm, gpt2_tokenizer(), config)


def machine(device: torch.device, precision: str = "auto") -> str:
    """One line: CPU model and the flags that decide bf16, threads, GPU, torch, precision."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = " ".join(f for f in CPU_FLAGS if f in flags) or "none of " + "/".join(CPU_FLAGS)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    dtype = resolve_precision(precision, device) or torch.float32
    return (f"machine: {cpu} [flags: {shown}; native bf16: {cpu_has_native_bf16()}], "
            f"{torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}; "
            f"device {device}, precision {precision} -> {str(dtype).split('.')[-1]}")


def device_of(args) -> torch.device:
    return resolve_device(args.device)


def median_rate(step, repeats: int = 5, steps: int = 3, warmup: int = 2) -> float:
    """Median over ``repeats`` windows of items per second; ``step()`` returns the items it
    did, so a short last batch counts at its real size."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start, done = time.perf_counter(), 0
        for _ in range(steps):
            done += step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured FLOP/s of a large square matmul: the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (forward and backward), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def run_isolated(script: str, args: list[str]) -> dict:
    """Run one configuration in a fresh process (clean peak-memory numbers); parse its JSON line."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{Path(script).name} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
