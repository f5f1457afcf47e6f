"""Command line: ``visiontales {train,generate,demo,serve,evaluate,report,sheet,push}`` (or ``python -m visiontales``).

Argument parsing lives in this subpackage only; every command calls the library's typed
functions. One module per command group (:mod:`.train`, :mod:`.generate`, :mod:`.demo`,
:mod:`.evaluate`, :mod:`.push`), each with an ``add_commands(sub)``; flags several commands share, the
training flags generated from ``TrainingConfig`` among them, are in :mod:`.args`.
Errors a user can fix print one line on stderr and exit 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import sys

from visiontales.app.cli import demo
from visiontales.app.cli import evaluate
from visiontales.app.cli import generate
from visiontales.app.cli import push
from visiontales.app.cli import train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visiontales", description="Turn a sequence of photos into a short story (VIST; CLIP + GPT-2).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (train, generate, demo, evaluate, push):
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError, TypeError, ImportError) as err:  # the user can fix these
        if args.debug:
            raise
        print(f"visiontales {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else: still one line; --debug for the traceback
        if args.debug:
            raise
        print(f"visiontales {args.command}: internal error ({type(err).__name__}): {err}; "
              "rerun with --debug for the traceback", file=sys.stderr)
        return 1
