"""``visiontales push``: upload a saved model folder to the Hugging Face Hub with a model card."""
from __future__ import annotations

from pathlib import Path


def cmd_push(args) -> int:
    from visiontales.model.hub import push_folder
    folder = Path(args.model)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; give the model folder that save_pretrained "
                                "or visiontales train wrote (e.g. runs/visiontales/final)")
    url = push_folder(folder, args.repo_id, private=args.private, token=args.token,
                      revision=args.revision, commit_message=args.message)
    print(f"pushed {folder} to {args.repo_id}: {url}")
    print(f'load it with StoryModel.from_pretrained("{args.repo_id}") or --model {args.repo_id}')
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("push", help="upload a saved model to the Hugging Face Hub, with a model card")
    p.add_argument("repo_id", help="the Hub repo, user/name or organisation/name (made if absent)")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="folder written by save_pretrained / train (its training.json, when there, "
                        "goes into the card)")
    p.add_argument("--private", action="store_true", default=None, help="make a new repo private")
    p.add_argument("--token", default=None,
                   help="Hub token with write access (default: HF_TOKEN or the `hf auth login` one)")
    p.add_argument("--revision", default=None, help="branch to push to (default: main; made if absent)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=cmd_push)
