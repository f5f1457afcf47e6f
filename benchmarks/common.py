"""Shared pieces of the benchmarks: full-size models with random weights, timing, peaks.

Random weights cost exactly the compute of the pretrained ones, and need no download.
"""
from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import visiontales as vt  # noqa: E402
from visiontales import loading  # noqa: E402
from visiontales.model import StoryModel, StoryModelConfig  # noqa: E402
from visiontales.tokens import build_tokenizer  # noqa: E402


def full_size_model(prefix: str = "mean", seed: int = 0) -> StoryModel:
    """CLIP ViT-B/32 (QuickGELU, as OpenAI's) + GPT-2 124M, randomly initialised, offline."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    clip, preprocess = loading.load_clip("ViT-B-32-quickgelu", None)
    tokenizer = build_tokenizer(vt.sample_dataset("train").texts)
    lm = GPT2LMHeadModel(GPT2Config(eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id))
    config = StoryModelConfig(clip="ViT-B-32-quickgelu", clip_pretrained=None, lm="gpt2-random", prefix=prefix)
    return StoryModel(clip, preprocess, lm, tokenizer, config)


def median_rate(step, items_per_step: int, repeats: int = 5, steps: int = 3, warmup: int = 2) -> float:
    """Median over ``repeats`` of items per second over ``steps`` calls of ``step()``."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        rates.append(items_per_step * steps / (time.perf_counter() - start))
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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}"


def run_isolated(script: str, args: list[str]) -> dict:
    """Run one configuration in a fresh process (clean peak-memory numbers); parse its JSON line."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
