"""Frozen CLIP image features, computed once per image and cached on disk.

Training never needs CLIP once the features of its images exist: the cache is keyed by
the encoder's identity and each file's (path, size, mtime), so a changed file is encoded
again and an unchanged one never is.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .utils import atomic_path, read_json, write_json

ImageLike = Union[str, os.PathLike, Image.Image]


def default_cache_dir() -> Path:
    """``$VISIONTALES_CACHE`` or ``~/.cache/visiontales``."""
    env = os.environ.get("VISIONTALES_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "visiontales"


def file_key(path: str | os.PathLike) -> str:
    """Cache key of an image file: absolute path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def module_digest(module: torch.nn.Module) -> str:
    """Short hash of a module's weights: the identity of a randomly initialised encoder."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class FeatureCache:
    """Features of one encoder in one safetensors file (float16) plus a JSON index.

    ``<root>/<encoder_id>/features.safetensors`` holds a ``(N, D)`` matrix and
    ``index.json`` maps each file key to its row. Both are replaced atomically, so an
    interrupted write never leaves a cache that a later run trusts.

    >>> import tempfile, torch
    >>> cache = FeatureCache(tempfile.mkdtemp(), "demo-encoder")
    >>> cache.put({"a.jpg|1|1": torch.ones(4)})
    >>> cache.get(["a.jpg|1|1", "b.jpg|1|1"])["a.jpg|1|1"].tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, root: str | os.PathLike, encoder_id: str):
        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_id)
        self.dir = Path(root) / safe_id
        self.matrix_path = self.dir / "features.safetensors"
        self.index_path = self.dir / "index.json"
        self._index: dict[str, int] | None = None
        self._matrix: torch.Tensor | None = None

    def _load(self) -> None:
        if self._index is not None:
            return
        self._index, self._matrix = {}, None
        if not (self.index_path.exists() and self.matrix_path.exists()):
            return
        try:
            index = read_json(self.index_path)
            with safe_open(str(self.matrix_path), framework="pt") as f:
                matrix = f.get_tensor("features")
            if not isinstance(index, dict) or (index and max(index.values()) >= len(matrix)):
                raise ValueError("index does not match the feature matrix")
        except Exception:  # a corrupted cache is rebuilt, never trusted
            return
        self._index, self._matrix = index, matrix

    def __len__(self) -> int:
        self._load()
        return len(self._index)

    def get(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """Return the cached features (float32) of the keys that are present."""
        self._load()
        return {k: self._matrix[self._index[k]].float() for k in keys if k in self._index}

    def put(self, features: dict[str, torch.Tensor]) -> None:
        """Add features and rewrite the cache files atomically."""
        if not features:
            return
        self._load()
        rows = [] if self._matrix is None else [self._matrix]
        index = dict(self._index)
        new = torch.stack([v.detach().to("cpu", torch.float16) for v in features.values()])
        start = 0 if self._matrix is None else len(self._matrix)
        for offset, key in enumerate(features):
            index[key] = start + offset
        matrix = torch.cat(rows + [new]) if rows else new
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.matrix_path) as tmp:
            save_file({"features": matrix.contiguous()}, str(tmp))
        write_json(self.index_path, index)
        self._index, self._matrix = index, matrix


class ImageEncoder:
    """Encode images with a frozen open_clip model, reading and filling a :class:`FeatureCache`.

    Features are L2-normalised (CLIP's own geometry; the model standardises them later
    with training-set statistics). PIL images given directly are encoded but not cached,
    since they have no file to key on.

    >>> # encoder = ImageEncoder(clip_model, preprocess, identity="ViT-B-32/openai")
    >>> # feats = encoder.encode(["a.jpg", "b.jpg"])  # (2, 512)
    """

    def __init__(
        self,
        clip_model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        identity: str,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 64,
        progress: bool = True,
        load_image: Callable[[str], Image.Image] | None = None,
    ):
        self.clip = clip_model
        self.preprocess = preprocess
        self.identity = identity
        self.cache = FeatureCache(cache_dir or default_cache_dir(), identity)
        self.batch_size = batch_size
        self.progress = progress
        if load_image is None:
            from .data import load_image as load_image
        self.load_image = load_image

    @torch.no_grad()
    def _encode_batch(self, images: list[Image.Image]) -> torch.Tensor:
        device = next(self.clip.parameters()).device
        pixels = torch.stack([self.preprocess(im) for im in images]).to(device)
        feats = self.clip.encode_image(pixels).float()
        feats = torch.nn.functional.normalize(feats, dim=-1).cpu()
        # round through float16 as the cache does, so a cold and a warm run agree exactly
        return feats.half().float()

    def encode(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Features of ``images`` as a ``(N, D)`` float32 tensor, in the given order."""
        keys: list[str | None] = [
            None if isinstance(im, Image.Image) else file_key(im) for im in images
        ]
        found = self.cache.get([k for k in keys if k is not None])
        todo = [i for i, k in enumerate(keys) if k is None or k not in found]
        # an image listed twice is encoded once
        unique_todo: dict[object, int] = {}
        for i in todo:
            unique_todo.setdefault(keys[i] if keys[i] is not None else id(images[i]), i)
        fresh: dict[object, torch.Tensor] = {}
        order = list(unique_todo.items())
        bar = tqdm(total=len(order), desc="encoding images", unit="img",
                   disable=not self.progress or not order)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            pils = [
                images[i] if isinstance(images[i], Image.Image) else self.load_image(images[i])
                for _, i in chunk
            ]
            for (ident, _), feat in zip(chunk, self._encode_batch(pils)):
                fresh[ident] = feat
            bar.update(len(chunk))
        bar.close()
        self.cache.put({k: v for k, v in fresh.items() if isinstance(k, str)})
        rows = []
        for i, key in enumerate(keys):
            if key is not None and key in found:
                rows.append(found[key])
            else:
                rows.append(fresh[key if key is not None else id(images[i])])
        return torch.stack(rows) if rows else torch.empty(0)
