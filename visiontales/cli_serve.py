"""``visiontales serve``: the demo page (Gradio; ``pip install "visiontales[demo]"``).

Kept apart from :mod:`visiontales.cli` like :mod:`visiontales.cli_eval`;
:func:`add_commands` registers it on the main parser.
"""
from __future__ import annotations


def cmd_serve(args) -> int:
    from .demo import serve
    serve(model_dir=args.model, tiny=args.tiny, sample=args.sample, port=args.port,
          host=args.host, open_browser=args.open)  # Gradio missing: ImportError, one line from main
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="open the demo page: add photos, reorder them, get a story")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="DIR", help="folder written by save_pretrained / train")
    source.add_argument("--tiny", action="store_true",
                        help="the offline tiny model, trained on the shipped sample data first "
                             "(minutes on a CPU)")
    p.add_argument("--sample", action="store_true",
                   help="open with a shipped sample sequence loaded (the tiny model unless --model)")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=cmd_serve)
