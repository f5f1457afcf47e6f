"""METEOR 1.5 through pycocoevalcap's jar: one Java process per scoring call.

Two ways of running it, as the VIST literature did:

- ``standard``: pycocoevalcap's own command (``-l en -norm``), as COCO captioning runs it.
- ``hter``: ``-t hter`` instead of ``-l en -norm``, the command of AREL's vendored
  ``vist_eval/meteor/meteor.py`` (commented there as "MSR VIST group's measurement") and
  the task the NAACL 2018 VIST challenge's scorer sets (``config.setTask("hter")``). With
  ``hter`` METEOR neither lowercases nor re-tokenises, and it splits on runs of whitespace.

:func:`finish` returns AREL's number (every key's stats on one EVAL line: the corpus
score) and each key's own score; :func:`segment_meteor` scores many (story, references)
pairs in one process, for a protocol that aggregates itself (the challenge's max-then-mean).

pycocoevalcap is the ``eval`` extra, so nothing here imports it before METEOR is asked for.
Without Java, or when the jar fails, the score is ``nan`` with one warning.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from typing import Hashable, Mapping, Sequence

from visiontales.utils import require

MODES = ("standard", "hter")


@functools.lru_cache(maxsize=None)
def _meteor_class() -> type:
    """pycocoevalcap's ``Meteor``, subclassed here on first use."""
    meteor = require("pycocoevalcap.meteor.meteor", "eval", "METEOR")

    class Meteor(meteor.Meteor):
        """pycocoevalcap's METEOR 1.5 wrapper with a chosen task, readable failures and a
        close. Same line protocol: ``SCORE ||| ref 1 ||| ... ||| hypothesis`` returns a
        segment's stats; ``EVAL ||| stats ||| ...`` one score per segment, then the corpus's.
        """

        def __init__(self, mode: str = "standard"):
            # set before Popen, so a failed start never leaves close() without them
            self.lock = threading.Lock()
            self.meteor_p = None
            task = ["-t", "hter"] if mode == "hter" else ["-l", "en", "-norm"]
            self.meteor_cmd = ["java", "-jar", "-Xmx2G", meteor.METEOR_JAR,
                               "-", "-", "-stdio", *task]
            # a file, not a pipe: a pipe nobody reads can fill up and hang the JVM
            self._stderr = tempfile.TemporaryFile()
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd, cwd=os.path.dirname(os.path.abspath(meteor.__file__)),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)

        def stderr_tail(self) -> str:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace").strip()[-300:]

        def close(self) -> None:
            # no lock: a failed call leaves pycocoevalcap's lock held
            proc, self.meteor_p = getattr(self, "meteor_p", None), None
            if proc is not None:
                proc.kill()
                proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    try:
                        stream.close()
                    except OSError:  # a dead JVM's stdin may still hold unflushed bytes
                        pass
            if hasattr(self, "_stderr"):
                self._stderr.close()

        __del__ = close

    return Meteor


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _failed(reason: str) -> float:
    """Warn once, pointing at the first caller outside visiontales; return nan."""
    frame, level = sys._getframe(), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"METEOR is reported as nan: {reason}", RuntimeWarning, stacklevel=level)
    return float("nan")


def _one_line(text: str) -> str:
    """The jar reads one segment per line; with ``hter`` whitespace runs are one separator,
    so a line break inside a story scores as a space."""
    return text.replace("\r", " ").replace("\n", " ")


def start(mode: str = "standard"):
    """The METEOR process, started now so that the JVM loads its tables (seconds) while
    other metrics run; None after one warning when Java is missing or does not start."""
    if mode not in MODES:
        raise ValueError(f"meteor_mode must be one of {MODES}, got {mode!r}")
    if shutil.which("java") is None:
        _failed("no `java` on PATH; install a JRE, e.g. `apt-get install default-jre-headless`")
        return None
    try:
        return _meteor_class()(mode)
    except OSError as err:
        _failed(f"could not start Java ({err})")
        return None


def finish(meteor, gts: Mapping[Hashable, Sequence[str]],
           res: Mapping[Hashable, Sequence[str]]) -> tuple[float, list[float]]:
    """(corpus score, per-key scores), 0-1, of ``res[k] == [story]`` against ``gts[k]``;
    closes ``meteor``. nan when :func:`start` gave None or the jar fails (one warning)."""
    nan = [float("nan")] * len(res)
    if meteor is None:
        return float("nan"), nan  # start() already warned
    # "|||" separates fields in METEOR's protocol; pycocoevalcap strips it from hypotheses only
    gts = {k: [_one_line(r).replace("|||", " ") for r in refs] for k, refs in gts.items()}
    res = {k: [_one_line(h) for h in hyps] for k, hyps in res.items()}
    try:
        score, scores = meteor.compute_score(gts, res)
        return float(score), [float(s) for s in scores]
    except (OSError, ValueError) as err:
        return _failed(f"the METEOR jar failed ({err!r}; java said: "
                       f"{meteor.stderr_tail()!r})"), nan
    finally:
        meteor.close()


def segment_meteor(pairs: Sequence[tuple[str, Sequence[str]]], mode: str = "hter") -> list[float]:
    """One METEOR (0-1) per ``(story, references)`` pair, all from one Java process."""
    keyed = dict(enumerate(pairs))
    return finish(start(mode), {i: list(refs) for i, (_, refs) in keyed.items()},
                  {i: [story] for i, (story, _) in keyed.items()})[1]
