"""Frozen CLIP image features, computed once per image and cached on disk.

Training never needs CLIP once the features of its images exist: the cache is keyed by
the encoder's identity and each file's (path, size, mtime), so a changed file is encoded
again and an unchanged one never is.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from visiontales.data.images import ImageLike
from visiontales.model.tower import TowerOutput
from visiontales.utils import atomic_path, progress_bar


def default_cache_dir() -> Path:
    """``$VISIONTALES_CACHE`` or ``~/.cache/visiontales``."""
    env = os.environ.get("VISIONTALES_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "visiontales"


def file_key(path: str | os.PathLike) -> str:
    """Cache key of an image file: absolute path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def module_digest(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> str:
    """Short hash of a module's weights (but those whose names start with ``skip``): the
    identity of a randomly initialised encoder."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        if name.startswith(skip):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_size(row: torch.Tensor) -> str:
    """What one cached image takes (float16), and what 210k images (VIST's) would.

    >>> describe_size(torch.zeros(16, 768))
    '24.0 KiB per image (16 x 768 float16); 210k images (VIST): 5.2 GB'
    """
    size = row.numel() * 2
    return (f"{size / 1024:.1f} KiB per image ({' x '.join(map(str, row.shape))} float16); "
            f"210k images (VIST): {size * 210_000 / 1e9:.1f} GB")


class FeatureCache:
    """Features of one encoder as float16 safetensors shards, each carrying its own index.

    ``<root>/<encoder_id>/*.safetensors``: every shard holds a ``(N, D)`` matrix and, in its
    metadata, the N file keys. A shard is one file written to a temporary name and renamed,
    so the matrix and its index can never disagree, a crash never leaves a half-written
    shard that is trusted, and several processes can add shards at once (sharded
    extraction). :meth:`compact` merges them into ``features.safetensors``, and :meth:`put`
    calls it once more than ``max_shards`` files pile up, so a cache fed in many small runs
    stays a few files. A shard that cannot be read is removed and its images encoded again.

    >>> import tempfile, torch
    >>> cache = FeatureCache(tempfile.mkdtemp(), "demo-encoder")
    >>> cache.put({"a.jpg|1|1": torch.ones(4)})
    >>> cache.get(["a.jpg|1|1", "b.jpg|1|1"])["a.jpg|1|1"].tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, root: str | os.PathLike, encoder_id: str, max_shards: int = 16):
        self.encoder_id, self.max_shards = encoder_id, max_shards
        safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_id)
        self.dir = Path(root) / safe_id
        self._index: dict[str, tuple[int, int]] | None = None  # key -> (matrix, row)
        self._matrices: list[torch.Tensor] = []
        self._seen: set[str] = set()  # shard files already in the index

    @property
    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.safetensors")) if self.dir.is_dir() else []

    def _load(self) -> None:
        if self._index is None:
            self._index, self._matrices, self._seen = {}, [], set()
            self.refresh()

    def refresh(self) -> None:
        """Read the shards other processes wrote since this cache last looked (one listing).

        Under DDP each rank encodes its share, then every rank refreshes and sees them all.
        """
        if self._index is None:
            return self._load()
        for shard in self.shards:
            if shard.name in self._seen:
                continue
            try:
                with safe_open(str(shard), framework="pt") as f:
                    keys = json.loads(f.metadata()["keys"])
                    matrix = f.get_tensor("features")
                if len(keys) != len(matrix):
                    raise ValueError("index does not match the feature matrix")
            except Exception:  # corrupted or foreign: never trusted, rebuilt on demand
                shard.unlink(missing_ok=True)
                continue
            self._seen.add(shard.name)
            for row, key in enumerate(keys):
                self._index[key] = (len(self._matrices), row)
            self._matrices.append(matrix)

    def __len__(self) -> int:
        self._load()
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        self._load()
        return key in self._index

    def get(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """Return the cached features (float32) of the keys that are present."""
        self._load()
        found = {}
        for key in keys:
            if key in self._index:
                matrix, row = self._index[key]
                found[key] = self._matrices[matrix][row].float()
        return found

    def _write(self, name: str, keys: list[str], matrix: torch.Tensor) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / name
        with atomic_path(path) as tmp:
            save_file({"features": matrix.to(torch.float16).contiguous()}, str(tmp),
                      metadata={"keys": json.dumps(keys)})
        return path

    def put(self, features: dict[str, torch.Tensor]) -> None:
        """Add features as a new shard (other shards are never rewritten)."""
        if not features:
            return
        self._load()
        keys = list(features)
        matrix = torch.stack([v.detach().cpu() for v in features.values()])
        self._seen.add(self._write(f"shard-{time.time_ns()}-{os.getpid()}.safetensors", keys, matrix).name)
        for row, key in enumerate(keys):
            self._index[key] = (len(self._matrices), row)
        self._matrices.append(matrix.to(torch.float16))
        if len(self._matrices) > self.max_shards:
            self.compact()

    def compact(self) -> None:
        """Merge all shards into one ``features.safetensors`` (one file to memory-map)."""
        old = self.shards
        if len(old) <= 1:
            return
        self._index = None  # read every shard on disk now, other processes' included,
        self._load()        # so the merged file loses nothing that ``old`` held
        keys = list(self._index)
        matrix = torch.stack([self._matrices[m][r] for m, r in self._index.values()])
        merged = self._write("features.safetensors", keys, matrix)
        for shard in old:
            if shard != merged:
                shard.unlink(missing_ok=True)
        self._index = {key: (0, row) for row, key in enumerate(keys)}
        self._matrices, self._seen = [matrix], {merged.name}


class _ImageFiles(torch.utils.data.Dataset):
    """Decode and preprocess image files; runs in DataLoader worker processes."""

    def __init__(self, paths: Sequence[str], preprocess, load_image):
        self.paths, self.preprocess, self.load_image = list(paths), preprocess, load_image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.load_image(self.paths[i]))


class ImageEncoder:
    """Encode images with a frozen open_clip model, reading and filling a :class:`FeatureCache`.

    Features are L2-normalised (CLIP's own geometry; the model standardises them later
    with training-set statistics) and rounded to float16 as stored. Files are decoded in
    ``num_workers`` DataLoader processes while the model encodes. ``precision="auto"``
    encodes with a bf16 copy of the frozen image tower where the hardware computes bf16
    natively (fp16 on CUDA GPUs without it), fp32 elsewhere; features are stored as float16
    either way, and the cache does not tell them apart (the README's performance section
    measures how close bf16 features are to fp32's). PIL images given directly are encoded but not cached, since they have no file
    to key on.

    >>> import tempfile, visiontales as vt
    >>> from visiontales.model.backbones import TINY_CLIP, load_clip
    >>> clip_model, preprocess = load_clip(TINY_CLIP, None)
    >>> encoder = ImageEncoder(clip_model, preprocess, "tiny", cache_dir=tempfile.mkdtemp(),
    ...                        progress=False)
    >>> paths = vt.sample_dataset("val").image_paths[:2]
    >>> features = encoder.encode(paths)  # encodes, then caches
    >>> tuple(features.shape), torch.equal(encoder.encode(paths), features)  # the cache's rows
    ((2, 64), True)
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
        num_workers: int = 0,
        precision: str = "fp32",
        cache: FeatureCache | None = None,
        output: TowerOutput = TowerOutput(),
    ):
        self.clip = clip_model
        self.preprocess = preprocess
        self.identity = identity
        self.cache = cache or FeatureCache(cache_dir or default_cache_dir(), identity)
        self.batch_size = batch_size
        self.progress = progress
        self.num_workers = num_workers
        self.precision = precision
        self.output = output  # pooled embeddings, patch tokens or trunk tokens (model.tower)
        if load_image is None:
            from visiontales.data.images import load_image as load_image
        self.load_image = load_image
        self._towers: dict[tuple[torch.device, torch.dtype], torch.nn.Module] = {}

    def _tower(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        """A frozen copy of CLIP's image tower in ``dtype``, made once per device and dtype."""
        if (device, dtype) not in self._towers:
            self._towers = {(device, dtype): copy.deepcopy(self.clip.visual).to(dtype).eval()}
        return self._towers[device, dtype]

    @torch.inference_mode()
    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        from visiontales.model.precision import frozen_weights_dtype
        device = next(self.clip.parameters()).device
        dtype = frozen_weights_dtype(self.precision, device)
        pixels = pixels.to(device, non_blocking=True)
        if self.output != TowerOutput():  # patch tokens, or the trunk below the tuned blocks
            visual = self.clip.visual if dtype is None else self._tower(device, dtype)
            feats = self.output.cached(visual, pixels if dtype is None else pixels.to(dtype)).float().cpu()
        elif dtype is None or not hasattr(self.clip, "visual"):
            feats = torch.nn.functional.normalize(self.clip.encode_image(pixels).float(), dim=-1).cpu()
        else:  # open_clip's encode_image is its visual tower, then an optional normalise
            feats = torch.nn.functional.normalize(self._tower(device, dtype)(pixels.to(dtype)).float(), dim=-1).cpu()
        # round through float16 as the cache does, so a cold and a warm run agree exactly
        return feats.half().float()

    def _encode_files(self, paths: list[str]) -> dict[str, torch.Tensor]:
        """Features of files (no cache lookup), with worker decoding and a progress bar."""
        if not paths:
            return {}
        loader = torch.utils.data.DataLoader(
            _ImageFiles(paths, self.preprocess, self.load_image), batch_size=self.batch_size,
            num_workers=self.num_workers, persistent_workers=False,
            pin_memory=next(self.clip.parameters()).is_cuda,
            # its own generator: a DataLoader draws a base seed, and from the global RNG that
            # would make a seeded training run depend on whether the feature cache was warm
            generator=torch.Generator())
        out: list[torch.Tensor] = []
        with progress_bar(total=len(paths), desc="encoding images", unit="img",
                  disable=not self.progress or not paths) as bar:
            for pixels in loader:
                out.append(self._encode_pixels(pixels))
                bar.update(len(pixels))
        return dict(zip(paths, torch.cat(out))) if out else {}

    def precompute(self, paths: Sequence[str | os.PathLike], shard_index: int = 0,
                   num_shards: int = 1) -> int:
        """Encode this shard's share of the uncached ``paths`` into the cache; returns how many.

        Run it in ``num_shards`` processes (``shard_index`` 0..n-1) to split extraction;
        each writes its own cache shard, and every reader then sees them all.
        """
        return self._precompute({file_key(p): str(p) for p in paths}, shard_index, num_shards)

    def _precompute(self, keys: dict[str, str], shard_index: int = 0, num_shards: int = 1) -> int:
        """:meth:`precompute` with the file keys already made: ``{file_key: path}``."""
        mine = list(keys)[shard_index::num_shards]  # by position in paths, never by what is cached
        self.cache.refresh()  # another process (a DDP rank, a second run) may have added shards
        todo = [k for k in mine if k not in self.cache]  # (another rank may have written already)
        fresh = self._encode_files([keys[k] for k in todo])
        self.cache.put({k: fresh[keys[k]] for k in todo})
        if todo and self.progress:  # what one image costs on disk, to size a large dataset's cache
            print(f"feature cache: {describe_size(next(iter(fresh.values())))}, "
                  f"{len(todo)} images added to {self.cache.dir}", file=sys.stderr)
        return len(todo)

    def encode(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Features of ``images`` as a ``(N, D)`` float32 tensor, in the given order."""
        key_of = {p: file_key(p) for p in dict.fromkeys(str(im) for im in images
                                                         if not isinstance(im, Image.Image))}
        if key_of:  # each file stat-ed once
            self._precompute({k: p for p, k in key_of.items()})
        found = self.cache.get(list(key_of.values()))
        pils = [im for im in images if isinstance(im, Image.Image)]
        pil_feats = {}
        if pils:
            pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in pils])
            pil_feats = {id(im): f for im, f in zip(pils, self._encode_pixels(pixels))}
        rows = [pil_feats[id(im)] if isinstance(im, Image.Image) else found[key_of[str(im)]]
                for im in images]
        return torch.stack(rows) if rows else torch.empty(0)


def encoder_identity(name: str, pretrained: str | None, visual: torch.nn.Module,
                     output: TowerOutput = TowerOutput()) -> str:
    """The feature cache's key for an image tower: the weights tag when it names them, else
    a digest of the weights themselves (random, tuned or loaded from a file); then what is
    cached (``output.cache_suffix``). Tuned blocks are left out of the digest: the cache holds
    the frozen trunk's tokens below them, which training never changes."""
    if pretrained and not os.path.isfile(pretrained):
        return f"{name}-{pretrained}{output.cache_suffix}"
    return f"{name}-{module_digest(visual, skip=output.tuned_prefixes(visual))}{output.cache_suffix}"


class ImageEncoders:
    """One model's :class:`ImageEncoder` per setting, kept between calls.

    Repeated ``generate``/``encode_images`` calls reuse the encoder (its bf16 tower, its
    cache index), and every encoder of one cache folder shares one :class:`FeatureCache`,
    so no call re-reads the cache's files. :meth:`clear` forgets them all when the image
    tower's weights change (the identity, and with it the cache key, must follow).
    """

    def __init__(self, clip_model: torch.nn.Module, preprocess, name: str, pretrained: str | None,
                 output: TowerOutput = TowerOutput()):
        self.clip, self.preprocess = clip_model, preprocess
        self.name, self.pretrained, self.output = name, pretrained, output
        self._identity: str | None = None
        self._encoders: dict[tuple, ImageEncoder] = {}

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = encoder_identity(self.name, self.pretrained, self.clip.visual, self.output)
        return self._identity

    def clear(self) -> None:
        self._identity, self._encoders = None, {}

    def get(self, cache_dir: str | os.PathLike | None = None, batch_size: int = 64, progress: bool = True,
            num_workers: int = 0, precision: str = "fp32") -> ImageEncoder:
        """The encoder for these settings, made on first use."""
        root = Path(cache_dir or default_cache_dir()).resolve()
        key = (root, self.identity, batch_size, progress, num_workers, precision)
        if key not in self._encoders:
            shared = next((e.cache for e in self._encoders.values() if e.cache.dir.parent == root), None)
            self._encoders[key] = ImageEncoder(self.clip, self.preprocess, self.identity, root,
                                               batch_size=batch_size, progress=progress,
                                               num_workers=num_workers, precision=precision, cache=shared,
                                               output=self.output)
        return self._encoders[key]
