"""The Hugging Face Hub: load a model by repo id, push one with a model card.

``StoryModel.from_pretrained("user/repo")`` finds the saved folder with
``huggingface_hub.snapshot_download`` (offline, ``HF_HUB_OFFLINE=1``, it takes the copy in
the local Hub cache, as transformers does); ``model.push_to_hub("user/repo")`` uploads the
folder of :meth:`~visiontales.model.story_model.StoryModel.save_pretrained` with a README.md model card.
A local folder always wins over a Hub id of the same spelling. Every Hub failure becomes one
sentence (:class:`~visiontales.model.backbones.WeightsUnavailableError` when loading,
:class:`HubError` when pushing), never a stack of HTTP errors.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from visiontales.model.backbones import WeightsUnavailableError
from visiontales.model.config import StoryModelConfig, read_config
from visiontales.utils import read_json

CARD_NAME = "README.md"
TRAINING_NAME = "training.json"  # how the model was trained, written beside output_dir/final
REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")
CARD_SETTINGS = ("lr", "batch_size", "epochs", "scheduler", "warmup_steps", "weight_decay",
                 "grad_accum_steps", "freeze_lm", "precision", "seed", "rl_weight", "rl_start_epoch")


class HubError(OSError):
    """The Hub refused or could not be reached; the message says which and what to do."""


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is spelled like a Hub repo id (``user/repo`` or ``repo``).

    >>> is_repo_id("user/stories"), is_repo_id("runs/demo/final"), is_repo_id("./mine")
    (True, False, False)
    """
    return bool(REPO_ID.match(name)) and not name.startswith(".") and ".." not in name


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def resolve_model(name_or_path: str | os.PathLike, revision: str | None = None,
                  cache_dir: str | None = None) -> Path:
    """The folder of a saved model: ``name_or_path`` itself, or the snapshot of a Hub repo.

    >>> resolve_model("no/such-model-here")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    visiontales.model.backbones.WeightsUnavailableError: no/such-model-here: no such folder, and no copy of the Hub model 'no/such-model-here' in the local Hub cache ...
    """
    path = Path(name_or_path)
    if path.exists():
        if revision is not None:
            raise ValueError(f"{path} is a local folder; revision={revision!r} is for Hub repo ids")
        return path
    name = os.fspath(name_or_path)
    if not is_repo_id(name):
        raise FileNotFoundError(f"{name}: no such folder; give a visiontales model folder (written by "
                                "save_pretrained) or a Hub repo id like 'user/repo'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    try:
        return Path(snapshot_download(name, revision=revision, cache_dir=cache_dir))
    except RevisionNotFoundError:
        raise WeightsUnavailableError(f"the Hub model {name!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise WeightsUnavailableError(f"{name}: no such folder, and no Hub model {name!r} (or it is private "
                                      "or gated: log in with `hf auth login` or set HF_TOKEN)") from None
    except Exception as err:  # offline, unreachable, incomplete snapshot: one sentence, not the HTTP stack
        at = f" at revision {revision!r}" if revision else ""
        why = ("HF_HUB_OFFLINE is set" if _offline()
               else f"the Hub could not be reached or refused ({_first_line(err)})")
        raise WeightsUnavailableError(
            f"{name}: no such folder, and no copy of the Hub model {name!r}{at} in the local Hub cache "
            f"({why}): connect once so it is downloaded, or give a visiontales model folder") from err


def _data_line(name: str, data: dict[str, Any] | None) -> str:
    if not data:
        return f"- {name}: none"
    photos = "/".join(map(str, data["photos_per_window"]))
    tasks = f"; instruction tasks {data['tasks']}" if data.get("tasks") else ""
    return (f"- {name}: {data['windows']} windows of {photos} photos from {data['stories']} stories "
            f"({data['skipped']} skipped while loading){tasks}")


def model_card(config: StoryModelConfig, repo_id: str, training: dict[str, Any] | None = None,
               has_clip_folder: bool = False) -> str:
    """The README.md pushed with a model: what it is, how to load it, how it was trained.

    >>> card = model_card(StoryModelConfig(), "me/stories")
    >>> 'StoryModel.from_pretrained("me/stories")' in card, "library_name: visiontales" in card
    (True, True)
    """
    clip = (f"open_clip `{config.clip}` with the `{config.clip_pretrained}` weights (open_clip downloads "
            "them; they are not in this repo)" if not has_clip_folder
            else f"open_clip `{config.clip}`, weights in `clip/` (open_clip's `local-dir:` format)")
    prefix = {"sequence": "one block of prefix tokens per photo plus a learned position, so the story "
                          "follows the order of the photos",
              "patches": "learned queries per photo reading its patch tokens, plus a learned photo "
                         "position, so the story follows the order of the photos",
              }.get(config.prefix, "the photos' features averaged, as in the VisionTales paper, so their "
                                   "order is lost")
    lines = [
        "---", "library_name: visiontales", "pipeline_tag: image-to-text",
        "tags:", "- visual-storytelling", "- vist", "- clip", "- gpt2", "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        "A visiontales story model: give it a sequence of "
        "photos, it tells a short story. A frozen CLIP encodes each photo; a prefix mapper turns the "
        f"features into {config.prefix_length} GPT-2 input embeddings ({config.prefix} prefix: {prefix}); "
        f"GPT-2 (`{config.lm}`, fine-tuned) writes the story after the prompt \"{config.prompt}\".", "",
        "## Use", "", "```python", "import visiontales as vt  # pip install visiontales", "",
        f'model = vt.StoryModel.from_pretrained("{repo_id}")',
        'print(model.generate([["1.jpg", "2.jpg", "3.jpg"]], num_beams=3)[0])', "```", "",
        f"From the shell: `visiontales generate --model {repo_id} 1.jpg 2.jpg 3.jpg`.", "",
        "## Files", "",
        "- `visiontales_config.json`: how to rebuild the model (CLIP name and weights tag, language "
        "model, prefix kind and length, prompt)",
        "- `mapper.safetensors`: the prefix mapper and the training-set statistics the CLIP features "
        "are standardised with",
        "- `lm/`: a plain transformers GPT-2 with its tokenizer: "
        f'`AutoModelForCausalLM.from_pretrained("{repo_id}", subfolder="lm")` loads it as is',
        f"- CLIP: {clip}", "",
        "Weights are safetensors and configs JSON: nothing in this repo is unpickled.", "",
        "## Training", ""]
    if training:
        cfg = training.get("config", {})
        settings = ", ".join(f"{k}={cfg[k]}" for k in CARD_SETTINGS if k in cfg)
        epochs = training.get("epochs")
        lines += [f"Trained with `visiontales.Trainer` (AdamW) for {epochs} epoch{'' if epochs == 1 else 's'}, "
                  f"{training.get('steps')} optimiser steps: {settings}.", "",
                  _data_line("training data", training.get("train_data")),
                  _data_line("evaluation data", training.get("eval_data")), "",
                  "## Evaluation", ""]
        final = training.get("final", {})
        numbers = {k: v for k, v in final.items() if k != "lr"}
        if numbers:
            lines += ["Last value of each number the training history recorded:", "",
                      "| name | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in numbers.items()]
        else:
            lines.append("No evaluation numbers were recorded.")
        if training.get("best"):
            best = training["best"]
            lines += ["", f"Best {best['metric']}: {best['value']:.4g} (epoch {best['epoch']})."]
    else:
        lines.append("Not recorded with this upload (push a folder written by `visiontales train`, or "
                     "`model.push_to_hub(..., training=trainer.training_record())`, to include it).")
    return "\n".join(lines) + "\n"


def push_folder(folder: str | os.PathLike, repo_id: str, private: bool | None = None,
                token: str | None = None, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Upload a saved model folder to ``repo_id`` with a model card; returns the commit URL.

    The card is generated from the folder's config and its ``training.json`` (when
    ``visiontales train`` wrote one), unless the folder has a README.md of its own.
    """
    folder = Path(folder)
    config = read_config(folder)  # a clear error for a folder that is no model
    if not is_repo_id(repo_id) or "/" not in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hub repo id; spell it 'user/name' or 'organisation/name'")
    training = read_json(folder / TRAINING_NAME) if (folder / TRAINING_NAME).is_file() else None
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    card = None if (folder / CARD_NAME).is_file() else model_card(
        config, repo_id, training, has_clip_folder=(folder / "clip").is_dir())
    if _offline():
        raise HubError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set; unset it to upload")
    from huggingface_hub import CommitOperationAdd, HfApi
    operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                  for p in files]
    if card is not None:
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode()))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(repo_id, operations, revision=revision,
                                 commit_message=commit_message or "Upload visiontales model")
    except Exception as err:  # one sentence for auth, network and server failures alike
        raise HubError(f"could not push to the Hub repo {repo_id!r} ({_first_line(err)}); check the "
                       "network and your token (`hf auth login` or HF_TOKEN, with write access)") from err
    return str(info.commit_url)
