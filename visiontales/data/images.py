"""Image files: find a photo by its id, check it cheaply, load it as RGB, embed it in a page.

Everything that opens an image goes through here, so VIST's odd files (mixed or missing
extensions, truncated JPEGs, 16-bit PNGs, palette transparency, decompression bombs) are
handled once, and every failure is an :class:`UnreadableImageError` that names the path.
``ImageLike`` is the one type for "a photo": a path or a PIL image.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> Image.new("RGBA", (8, 6), (255, 0, 0, 0)).save(folder / "42.PNG")
>>> path = find_image(folder, 42)
>>> path.name, check_image(path), load_image(path).getpixel((0, 0))
('42.PNG', None, (255, 255, 255))
"""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, Image.Image]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", "")  # "" = no extension


class UnreadableImageError(ValueError):
    """An image is missing, empty, truncated, not an image, or a decompression bomb.

    >>> issubclass(UnreadableImageError, ValueError)
    True
    """


def candidate_names(photo_id: str) -> Iterator[str]:
    """File names ``<photo_id><ext>`` in the order :func:`find_image` tries them.

    >>> list(candidate_names("7"))[:3]
    ['7.jpg', '7.JPG', '7.jpeg']
    """
    for ext in IMAGE_EXTENSIONS:
        yield photo_id + ext
        if ext != ext.upper():
            yield photo_id + ext.upper()


def find_image(images_dir: str | os.PathLike, photo_id: str | int) -> Path | None:
    """Return ``<images_dir>/<photo_id><ext>`` for the first extension in
    ``IMAGE_EXTENSIONS`` (lower- then upper-case) that exists, or None.

    >>> find_image(".", "no-such-photo") is None
    True
    """
    for name in candidate_names(str(photo_id)):
        path = Path(images_dir) / name
        if path.is_file():
            return path
    return None


def _why_unreadable(exc: BaseException) -> str:
    """A short, human reason for an exception PIL raised while opening or decoding."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"decompression bomb ({exc})"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file"
    if "truncated" in str(exc):
        return "truncated file"
    return f"{type(exc).__name__}: {exc}"


_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _jpeg_is_complete(path: Path) -> bool:
    """Is there an end-of-image marker in the last kilobyte (padding may follow it)?"""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 1024))
        return b"\xff\xd9" in f.read()


def _file_problem(path: Path) -> str | None:
    if not path.is_file():
        return "missing image"
    return "unreadable image: empty file (0 bytes)" if path.stat().st_size == 0 else None


def check_image(path: str | os.PathLike) -> str | None:
    """Cheap check that ``path`` is a readable image: None if fine, else a short reason.

    Reads the header (PIL ``verify``, which also checks PNG chunk checksums); a JPEG
    without an end marker is decoded at 1/8 scale to find truncation.

    >>> check_image("no-such-file.jpg")
    'missing image'
    """
    path = Path(path)
    if problem := _file_problem(path):
        return problem
    try:
        with Image.open(path) as image:
            image_format, (width, height) = image.format, image.size
            image.verify()
        if image_format == "JPEG" and not _jpeg_is_complete(path):
            with Image.open(path) as image:
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
    except _PIL_ERRORS as exc:
        return f"unreadable image: {_why_unreadable(exc)}"
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels / 257.0  # 16-bit -> 8-bit: 65535 / 257 = 255
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if (image.mode == "P" and "transparency" in image.info) or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB (first frame of a GIF, EXIF rotation applied).

    Raises :class:`UnreadableImageError` (a ValueError) naming the path when the file is
    missing, empty, truncated, not an image, or larger than PIL's decompression-bomb limit.

    >>> load_image("no-such-file.jpg")
    Traceback (most recent call last):
    ...
    visiontales.data.images.UnreadableImageError: no-such-file.jpg: missing image
    """
    path = Path(path)
    if problem := _file_problem(path):
        raise UnreadableImageError(f"{path}: {problem}")
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except _PIL_ERRORS as exc:
        raise UnreadableImageError(f"{path}: unreadable image: {_why_unreadable(exc)}") from exc


def load_rgb(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path (via :func:`load_image`) or from a PIL image.

    >>> load_rgb(Image.new("L", (4, 4))).mode
    'RGB'
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return load_image(image)


def image_data_url(image: ImageLike, max_side: int = 160, quality: int = 85) -> str:
    """A JPEG ``data:`` URL of ``image`` (a path or PIL image), longest side <= ``max_side``:
    how a report page or a multimodal judge request carries a photo inline.

    >>> image_data_url(Image.new("RGB", (640, 480), "teal"))[:23]
    'data:image/jpeg;base64,'
    """
    image = load_rgb(image)
    image.thumbnail((max_side, max_side))  # keeps the aspect ratio, never enlarges
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
