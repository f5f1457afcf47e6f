"""Numeric precision: bf16 autocast where the hardware does it natively, fp32 elsewhere."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def native_bf16_in_flags(flags: str) -> bool:
    """True when a Linux ``/proc/cpuinfo`` flags string names a native bf16 unit.

    Only AVX-512 BF16 (Intel Cooper Lake+, AMD Zen 4+) and AMX (Sapphire Rapids+) compute
    bf16 in hardware; plain AVX-512 (Skylake, Ice Lake) and AVX2 emulate it, slower than fp32.

    >>> native_bf16_in_flags("fpu sse2 avx2 avx512f avx512bw avx512_vnni")
    False
    >>> native_bf16_in_flags("fpu avx2 avx512f avx512_bf16")
    True
    """
    words = set(flags.split())
    return bool(words & {"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX-512 BF16 or AMX: read from Linux's CPU flags, elsewhere from torch."""
    try:
        return native_bf16_in_flags(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: ask PyTorch's own CPU feature checks (never plain AVX-512)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cuda_has_native_bf16() -> bool:
    """True on CUDA GPUs that compute bf16 in hardware (Ampere+), not by emulation."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation and never counted emulation
        return torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain fp32.

    >>> resolve_precision("fp32", torch.device("cpu")) is None
    True
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = cuda_has_native_bf16()
    elif device.type == "cpu":
        supported = cpu_has_native_bf16()
    else:  # mps and others: autocast support is partial, stay exact
        supported = False
    if precision == "bf16":
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"bf16 autocast is not supported on {device.type}; use precision='fp32'")
        return torch.bfloat16
    return torch.bfloat16 if supported else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def frozen_weights_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to cast a *frozen* model's weights to for inference; None keeps fp32.

    Casting the weights (not autocasting) halves the memory each matmul reads, which is
    what makes a CPU with native bf16 about twice as fast. Where CUDA has no native bf16,
    ``"auto"`` uses fp16 weights instead: no gradients flow through a frozen model, so
    fp16's narrow range only has to hold activations, which CLIP keeps small.

    >>> frozen_weights_dtype("fp32", torch.device("cpu")) is None
    True
    """
    dtype = resolve_precision(precision, device)
    if dtype is None and precision == "auto" and device.type == "cuda":
        return torch.float16
    return dtype
