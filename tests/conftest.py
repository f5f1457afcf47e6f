"""Shared fixtures: small VIST-format datasets written to disk (real JSON, real images), the
`require` check for tools outside Python, one torch thread for tiny models.

Test modules take these as fixtures; none imports this file or another test module.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

# Tests never touch the network: set before transformers/huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _require(condition: object, reason: str) -> None:
    __tracebackhide__ = True  # report the skip or failure at the caller's line
    if condition:
        return
    if os.environ.get("VISIONTALES_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (VISIONTALES_REQUIRE_ALL=1: required here, not skipped)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require():
    """`require(condition, reason)`: skip the calling test unless `condition` holds; fail it
    instead under CI.

    For tests that need something outside the Python environment (Chromium, Java) or an
    optional extra (gradio). `.ci/run` sets VISIONTALES_REQUIRE_ALL=1, so a missing tool
    there is a red test, not a quiet skip; a developer without it still gets a skip.

        def test_meteor(require):
            require(shutil.which("java"), "METEOR needs Java (apt-get install default-jre-headless)")
    """
    return _require


@pytest.fixture(scope="session")
def java(require):
    """Java on the PATH, for METEOR's jar: a test that takes this fixture skips without it
    (fails under VISIONTALES_REQUIRE_ALL=1)."""
    require(shutil.which("java"), "METEOR runs a Java jar: install a JRE "
                                  "(Debian: apt-get install default-jre-headless)")


@contextmanager
def _torch_threads(n: int):
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for all the module's tests, slow ones included: tiny models run faster
    on one, and far faster when other jobs share the cores. Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with _torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _one_thread_unless_slow(request):
    """Tests outside the slow tier run torch on one thread. Two OpenMP threads on a busy
    2-core machine wait on each other: the fast tier took 190 s instead of 40 s while another
    test run shared the cores. Slow tests keep their threads (their margins were measured so);
    CLIP features come out bit-identical either way, so the shared feature cache does not care."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    with _torch_threads(1):
        yield


@pytest.fixture
def cli(capsys, monkeypatch):
    """`cli(*args, cwd=...)`: the `visiontales` command run in this interpreter from `cwd`,
    returning its exit code and output as a `subprocess.CompletedProcess`.

    For a command's behaviour; a fresh `python -m visiontales` costs seconds of imports
    (torch, open_clip), so each command family keeps one test that starts one."""
    from visiontales.app.cli import main

    def run_here(*args: str, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run_here


@pytest.fixture(scope="session")
def gpt2_tok():
    """GPT-2's real tokenizer, offline (``tokens.gpt2_tokenizer``): built once, as converting
    its 50k BPE ranks takes seconds."""
    from visiontales.model.tokens import gpt2_tokenizer
    return gpt2_tokenizer()


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory):
    """Keep every feature cache of the test session in a temporary folder."""
    os.environ["VISIONTALES_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield

IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", "": "JPEG", ".png": "PNG", ".gif": "GIF",
                 ".bmp": "BMP"}


def _write_vist(tmp_path: Path, stories: list[list[dict[str, Any]]] | None = None, *,
              albums: dict[str, str] | None = None, image_exts: dict[str, str] | None = None,
              missing: tuple[str, ...] = (), shuffle: bool = True, seed: int = 0,
              filename: str = "sis.json", image_size: int = 32) -> tuple[Path, Path]:
    """Write a VIST story-in-sequence JSON and its image folder; return (json_path, images_dir).

    stories: one list per story of storylet dicts; every field not given is filled in.
        Story i, position k gets story_id "100i", album_id "200i", photo_flickr_id
        "3i0k" (i.e. 30000 + 100 * i + k), worker_arranged_photo_order k,
        text "story i sentence k .". Default: 3 stories of 5 storylets.
    albums: album_id -> vist_label for the top-level "albums" list (default: every album
        of the stories, labelled "test_event"; {} writes an empty list).
    image_exts: photo_flickr_id -> file extension ("", ".png", ".GIF", ...; default ".jpg").
    missing: photo ids whose image file is not written.
    shuffle: write the annotations in a shuffled order (seeded), as real files are.

    Every written image is a real, valid file of `image_size` pixels whose colour depends on
    the photo id. Damage them afterwards to test skips; edit the JSON to drop fields.

        ann, images = make_vist(tmp_path, [[{"text": "hi ."}] * 3])   # the fixture below
        ds = visiontales.data.vist.load_vist(ann, images, progress=False)
    """
    tmp_path = Path(tmp_path)
    images_dir = tmp_path / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    stories = [[{}] * 5] * 3 if stories is None else stories
    annotations = []
    for i, story in enumerate(stories):
        for k, given in enumerate(story):
            storylet = {"original_text": f"Story {i} sentence {k}.", "album_id": str(2000 + i),
                        "photo_flickr_id": str(30000 + 100 * i + k), "setting": "",
                        "story_id": str(1000 + i), "tier": "story-in-sequence",
                        "worker_arranged_photo_order": k, "text": f"story {i} sentence {k} .",
                        "storylet_id": str(5 * (1000 + i) + k)}
            storylet.update(given)
            annotations.append([storylet])
    if shuffle:
        random.Random(seed).shuffle(annotations)

    photo_ids = dict.fromkeys(str(s["photo_flickr_id"]) for [s] in annotations)
    image_exts = image_exts or {}
    for pid in photo_ids:
        if pid in missing:
            continue
        ext = image_exts.get(pid, ".jpg")
        color = tuple(zlib.crc32(pid.encode()).to_bytes(4, "big")[:3])
        image = Image.new("RGB", (image_size, image_size), color)
        image.save(images_dir / f"{pid}{ext}", IMAGE_FORMATS[ext.lower()])

    if albums is None:
        albums = {str(s["album_id"]): "test_event" for [s] in annotations if "album_id" in s}
    data = {"info": {"description": "test fixture"}, "type": "story_in_sequence",
            "albums": [{"id": a, "vist_label": label, "title": "", "description": ""}
                       for a, label in albums.items()],
            "images": [{"id": pid, "title": "", "url_o": "", "datetaken": ""}
                       for pid in photo_ids],
            "annotations": annotations}
    path = tmp_path / filename
    path.write_text(json.dumps(data), encoding="utf-8")
    return path, images_dir


@pytest.fixture(scope="session")
def make_vist():
    """The `make_vist(tmp_path, stories=None, ...)` writer: a VIST SIS JSON plus real image
    files; returns (annotations_path, images_dir). A plain function, safe to share between
    hypothesis examples. See `_write_vist` for the options.

        def test_x(make_vist, tmp_path):
            ann, images = make_vist(tmp_path)
    """
    return _write_vist


@pytest.fixture
def serve():
    """`serve(reply)`: a stand-in OpenAI-compatible chat server on 127.0.0.1, a real HTTP
    server in a thread (tests/chat_server.py says what `reply` returns and what it records),
    shut down after the test."""
    from chat_server import start
    servers = []

    def serve_with(reply):
        servers.append(start(reply))
        return servers[-1]
    yield serve_with
    for server in servers:
        server.shutdown()
        server.server_close()
