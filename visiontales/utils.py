"""Small helpers shared by several modules: device choice, seeding, atomic writes, extras."""
from __future__ import annotations

import importlib
import json
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np
import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` into the best available device: cuda, then mps, then cpu.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible from its config."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    A crash mid-write then leaves the old file (or none), never a half-written one
    that a later run would trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (indent 2, sorted keys for stable diffs)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON with an error that names the file when it is malformed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-file progress bars while we save or load small parts."""
    from transformers.utils import logging as hf_logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class MissingExtraError(ImportError):
    """An optional extra (``pip install "visiontales[NAME]"``) is needed and not installed."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` from an optional extra, or say in one line how to install it.

    The core (load, train, generate, save) needs no extra; evaluation, the demo page and
    human-evaluation statistics import their packages here, at the point of use.

    >>> require("json", "eval", "JSON").dumps([1])
    '[1]'
    >>> require("no_such_module_here", "eval", "the VIST metrics")
    Traceback (most recent call last):
    ...
    visiontales.utils.MissingExtraError: the VIST metrics need no_such_module_here, which is not installed: pip install "visiontales[eval]"
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingExtraError(f"{what} need {package}, which is not installed: "
                                f'pip install "visiontales[{extra}]"') from None
