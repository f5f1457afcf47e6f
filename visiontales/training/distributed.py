"""torch.distributed helpers: the Trainer runs DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node N -m visiontales train ...`` (or ``torchrun ... your_script.py``)
sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`init` then joins the process group
(nccl on CUDA, gloo on CPU). Outside torchrun everything is a no-op for one process.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Only rank 0 logs, prints samples and writes files."""
    return rank() == 0


def init(device: str = "auto") -> torch.device | None:
    """Join the process group when launched by torchrun; return this rank's device.

    Returns None when not launched distributed (the caller keeps its own device choice).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
