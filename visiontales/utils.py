"""Small helpers shared by several modules: device choice, scoped random streams, atomic writes, extras."""
from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm


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


@contextmanager
def forked_rng(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block on its own torch random stream, seeded with ``seed``.

    The caller's global torch state (the CPU generator and ``device``'s, when that is a GPU)
    is put back afterwards, so building a model, training or ``generate(seed=...)`` never
    moves the caller's own random numbers. Python's and NumPy's generators are not used.

    >>> _ = torch.manual_seed(0); before = torch.rand(1)
    >>> _ = torch.manual_seed(0)
    >>> with forked_rng(123):
    ...     _ = torch.rand(5)
    >>> bool(torch.rand(1) == before)
    True
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    accelerator = device.type in ("cuda", "mps")
    index = (device.index if device.index is not None else
             torch.cuda.current_device() if device.type == "cuda" else 0)
    with torch.random.fork_rng(devices=[index] if accelerator else [], device_type=device.type
                               if accelerator else "cuda"):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            elif device.type == "mps":
                torch.mps.manual_seed(seed)
        yield


@contextmanager
def tf32_matmuls(device: torch.device) -> Iterator[None]:
    """TF32 tensor cores for fp32 matmuls on CUDA inside the block only (about 2x on
    Ampere and later at fp32 training quality); the caller's setting is put back."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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


LOG_MININTERVAL = 30.0  # seconds between redraws when a bar writes to a log file


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """tqdm's bar, but in a log (stderr not a terminal, not a notebook) one line per 30 s.

    A bar redraws ten times a second; redirected to a file, an hour of extraction would be
    36,000 lines. Terminals and notebooks keep the live bar.
    """
    notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    if not notebook and not _isatty(kwargs.get("file") or sys.stderr):
        kwargs.setdefault("mininterval", LOG_MININTERVAL)
    return tqdm(*args, **kwargs)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


TINY_RECIPE_DIR = Path(__file__).resolve().parent / "recipes" / "tiny"


def tiny_recipe() -> dict[str, Any]:
    """The tiny offline recipe's sizes and settings (``recipes/tiny/recipe.json``): data, so
    the model and training layers read it without importing the recipes layer."""
    return read_json(TINY_RECIPE_DIR / "recipe.json")
