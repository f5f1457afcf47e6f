"""The Hugging Face Hub: a model in the local Hub cache loads by repo id offline, push_to_hub
uploads the saved folder and a model card (to a Hub stand-in on 127.0.0.1 that answers the
endpoints huggingface_hub's client calls), and every Hub failure is one sentence."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from huggingface_hub import ModelCard, constants, scan_cache_dir
from huggingface_hub.file_download import repo_folder_name

import visiontales as vt
from visiontales.model import hub
from visiontales.model.story_model import StoryModelConfig


def place_in_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
    """Lay ``files`` out as ``snapshot_download`` leaves them: content-addressed blobs, a
    snapshot folder of relative symlinks named by the commit, and ``refs/<ref>``."""
    commit = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())
                                     ).encode()).hexdigest()
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that huggingface_hub uses by default (HF_HUB_CACHE)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import: follow the variable
    return cache


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Two tiny models of different weights, saved; and photo sequences to tell stories of."""
    train = vt.sample_dataset("train").select(range(6))
    root = tmp_path_factory.mktemp("saved")
    first = vt.StoryModel.tiny(vocab_from=train, prefix="sequence", seed=0)
    second = vt.StoryModel.tiny(vocab_from=train, prefix="sequence", seed=1)
    first.save_pretrained(root / "first")
    second.save_pretrained(root / "second")
    sequences = [list(p) for p in vt.sample_dataset("val").frame["image_paths"].head(2)]
    return root / "first", root / "second", sequences


@pytest.fixture
def config_only(tmp_path):
    """A folder with just a model's config: enough for what happens before weights are read."""
    from visiontales.model.saving import CONFIG_NAME
    from visiontales.utils import write_json
    folder = tmp_path / "config-only"
    folder.mkdir()
    write_json(folder / CONFIG_NAME, {"visiontales": asdict(StoryModelConfig())})
    return folder


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hub on 127.0.0.1 answering what ``HfApi.create_repo`` / ``create_commit`` call:
    repo creation, README metadata validation, preupload (every file "regular", so contents
    travel base64 in the commit) and the commit itself, which it records."""
    state = {"requests": [], "commits": [], "repos": [], "fail": None}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            state["requests"].append(("GET", urlparse(self.path).path))
            self.reply(404, {"error": "not found"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = urlparse(self.path).path
            state["requests"].append(("POST", path, self.headers.get("authorization")))
            if state["fail"]:
                return self.reply(state["fail"], {"error": "Invalid credentials in Authorization header"})
            if path == "/api/repos/create":
                data = json.loads(body)
                state["repos"].append(data)
                return self.reply(200, {"url": f"{endpoint}/{data['organization']}/{data['name']}"})
            if path == "/api/validate-yaml":
                return self.reply(200, {"warnings": [], "errors": []})
            if m := re.fullmatch(r"/api/models/(.+)/preupload/(.+)", path):
                files = json.loads(body)["files"]
                return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                   "shouldIgnore": False} for f in files]})
            if re.fullmatch(r"/api/models/(.+)/branch/(.+)", path):
                return self.reply(200, {})
            if m := re.fullmatch(r"/api/models/(.+)/commit/(.+)", path):
                items = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                files = {i["value"]["path"]: base64.b64decode(i["value"]["content"])
                         for i in items if i["key"] == "file"}
                header = next(i["value"] for i in items if i["key"] == "header")
                oid = hashlib.sha1(body).hexdigest()
                state["commits"].append({"repo": m[1], "revision": m[2], "summary": header["summary"],
                                         "files": files, "oid": oid})
                return self.reply(200, {"commitUrl": f"{endpoint}/{m[1]}/commit/{oid}", "commitOid": oid})
            return self.reply(404, {"error": f"no route {path}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the only host it reaches is 127.0.0.1
    state["endpoint"] = endpoint
    yield state
    server.shutdown()
    server.server_close()


# ---- loading by repo id ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_model_in_the_hub_cache_loads_by_id_offline_and_tells_the_same_stories(saved_models, hub_cache):
    first, second, sequences = saved_models
    place_in_hub_cache(hub_cache, "me/stories", folder_files(first))
    commit = place_in_hub_cache(hub_cache, "me/stories", folder_files(second), ref="v2")
    assert [r.repo_id for r in scan_cache_dir(hub_cache).repos] == ["me/stories"]  # a real cache layout

    assert constants.HF_HUB_OFFLINE
    from_hub = vt.StoryModel.from_pretrained("me/stories")
    from_folder = vt.StoryModel.from_pretrained(first)
    assert from_hub.config == from_folder.config
    assert from_hub.generate(sequences, progress=False) == from_folder.generate(sequences, progress=False)
    # a revision picks another snapshot, by tag and by commit: the second model's weights
    mapper = vt.StoryModel.from_pretrained(second).mapper.state_dict()
    assert not all(torch.equal(v, from_hub.mapper.state_dict()[k]) for k, v in mapper.items())
    for revision in ("v2", commit):
        other = vt.StoryModel.from_pretrained("me/stories", revision=revision).mapper.state_dict()
        assert all(torch.equal(v, other[k]) for k, v in mapper.items())


def test_a_local_folder_wins_over_the_hub_and_takes_no_revision(tmp_path, monkeypatch, hub_cache):
    (tmp_path / "me" / "stories").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub.resolve_model("me/stories") == Path("me/stories")   # no Hub call: it is a folder here
    with pytest.raises(ValueError, match="local folder; revision='v1' is for Hub repo ids"):
        hub.resolve_model("me/stories", revision="v1")
    with pytest.raises(FileNotFoundError, match="visiontales model folder"):
        hub.resolve_model(tmp_path / "absent")                      # a path, never a Hub id


def test_a_model_neither_here_nor_in_the_cache_is_one_sentence_offline(hub_cache, config_only):
    with pytest.raises(vt.WeightsUnavailableError) as err:
        vt.StoryModel.from_pretrained("me/absent")
    message = str(err.value)
    assert "\n" not in message and "HF_HUB_OFFLINE is set" in message and "'me/absent'" in message
    place_in_hub_cache(hub_cache, "me/stories", folder_files(config_only))
    with pytest.raises(vt.WeightsUnavailableError, match="at revision 'v9'"):
        vt.StoryModel.from_pretrained("me/stories", revision="v9")


def test_an_unreachable_hub_is_one_sentence(hub_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # nothing listens
    with pytest.raises(vt.WeightsUnavailableError) as err:
        vt.StoryModel.from_pretrained("me/stories")
    assert "\n" not in str(err.value) and "could not be reached" in str(err.value)


def test_the_cli_says_one_line_for_a_model_it_cannot_find(cli, hub_cache, tmp_path):
    out = cli("generate", "--model", "me/absent", "a.jpg")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "HF_HUB_OFFLINE is set" in out.stderr
    out = cli("push", "me/stories", "--model", str(tmp_path / "absent"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no such folder" in out.stderr


# ---- the model card ---------------------------------------------------------------------------

RECORD = {"config": {"lr": 0.001, "batch_size": 8, "epochs": 3, "seed": 42}, "steps": 60, "epochs": 3,
          "train_data": {"windows": 468, "stories": 124, "photos_per_window": [3], "skipped": 2},
          "eval_data": {"windows": 90, "stories": 30, "photos_per_window": [3], "skipped": 0},
          "final": {"loss": 1.25, "lr": 0.001, "eval_loss": 1.5, "CIDEr": 42.0},
          "best": {"metric": "eval_loss", "value": 1.4, "epoch": 2}}


def test_the_model_card_says_how_to_load_it_and_how_it_was_trained():
    config = StoryModelConfig(prefix="sequence")
    card = ModelCard(hub.model_card(config, "me/stories", RECORD))   # huggingface_hub parses it
    assert card.data.library_name == "visiontales" and card.data.pipeline_tag == "image-to-text"
    text = card.text
    assert 'vt.StoryModel.from_pretrained("me/stories")' in text
    assert 'AutoModelForCausalLM.from_pretrained("me/stories", subfolder="lm")' in text
    assert "`ViT-B-32` with the `openai` weights" in text
    assert "468 windows of 3 photos from 124 stories (2 skipped" in text
    assert "lr=0.001, batch_size=8, epochs=3" in text
    assert "| eval_loss | 1.5 |" in text and "| CIDEr | 42 |" in text and "| lr |" not in text
    assert "Best eval_loss: 1.4 (epoch 2)" in text
    untrained = hub.model_card(config, "me/stories")
    assert "Not recorded with this upload" in untrained and "## Evaluation" not in untrained


# ---- pushing ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_push_to_hub_uploads_the_saved_folder_with_a_card_and_it_loads_back_by_id(
        fake_hub, saved_models, hub_cache, tmp_path, monkeypatch):
    first, _, sequences = saved_models
    model = vt.StoryModel.from_pretrained(first)
    url = model.push_to_hub("me/stories", private=True, token="hf_fake", training=RECORD)
    assert url == f"{fake_hub['endpoint']}/me/stories/commit/{fake_hub['commits'][0]['oid']}"
    [repo] = fake_hub["repos"]
    assert (repo["organization"], repo["name"], repo["visibility"]) == ("me", "stories", "private")
    assert all(auth == "Bearer hf_fake" for _, _, auth in fake_hub["requests"])
    [commit] = fake_hub["commits"]
    assert (commit["repo"], commit["revision"]) == ("me/stories", "main")
    uploaded = commit["files"]
    # exactly what save_pretrained writes, byte for byte, plus the card and the training record
    model.save_pretrained(tmp_path / "again")
    expected = folder_files(tmp_path / "again")
    assert {k: v for k, v in uploaded.items() if k not in ("README.md", "training.json")} == expected
    assert json.loads(uploaded["training.json"]) == RECORD
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "visiontales" and "| eval_loss | 1.5 |" in card.text
    # and what was uploaded is a model: in a Hub cache it loads by id and tells the same stories
    place_in_hub_cache(hub_cache, "me/stories", uploaded)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    again = vt.StoryModel.from_pretrained("me/stories")
    assert again.generate(sequences, progress=False) == model.generate(sequences, progress=False)


def test_push_refuses_offline_and_bad_repo_ids_in_one_sentence(config_only):
    with pytest.raises(hub.HubError, match="HF_HUB_OFFLINE is set; unset it to upload"):
        hub.push_folder(config_only, "me/stories")
    with pytest.raises(ValueError, match="not a Hub repo id"):
        hub.push_folder(config_only, "stories")
    with pytest.raises(FileNotFoundError, match="visiontales model folder"):
        hub.push_folder(config_only.parent, "me/stories")


def test_a_hub_that_refuses_the_token_is_one_line_on_the_cli(fake_hub, config_only, cli):
    fake_hub["fail"] = 401
    out = cli("push", "me/stories", "--model", str(config_only), "--token", "hf_wrong")
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert "could not push to the Hub repo 'me/stories'" in out.stderr and "hf auth login" in out.stderr
    assert fake_hub["commits"] == []


@pytest.mark.slow
def test_cli_push_of_a_trained_folder_writes_its_training_into_the_card(fake_hub, tmp_path, cli):
    data = vt.sample_dataset("train").select(range(8))
    val = vt.sample_dataset("val").select(range(4))
    model = vt.StoryModel.tiny(vocab_from=data)
    config = vt.TrainingConfig.tiny(epochs=1, batch_size=4, progress=False, output_dir=str(tmp_path / "run"))
    vt.Trainer(model, data, val, config).train()
    record = json.loads((tmp_path / "run" / "final" / "training.json").read_text())
    assert record["train_data"]["windows"] == 8 and record["eval_data"]["windows"] == 4
    assert record["config"]["lr"] == config.lr and record["steps"] == 2 and "eval_loss" in record["final"]

    out = cli("push", "me/run", "--model", str(tmp_path / "run" / "final"), "--revision", "v1",
              "--message", "first run")
    assert out.returncode == 0, out.stderr
    assert "pushed" in out.stdout and 'from_pretrained("me/run")' in out.stdout
    [commit] = fake_hub["commits"]
    assert (commit["revision"], commit["summary"]) == ("v1", "first run")
    assert ("POST", "/api/models/me/run/branch/v1") in [r[:2] for r in fake_hub["requests"]]
    card = commit["files"]["README.md"].decode()
    assert "Trained with `visiontales.Trainer` (AdamW) for 1 epoch, 2 optimiser steps" in card
    assert "8 windows of 3 photos" in card and "| eval_loss |" in card
