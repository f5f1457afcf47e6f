"""VIST's text form: lowercase, space-separated tokens, ``[male]``-style placeholders.

Shared by evaluation (scoring), the instruction tasks and the RL rewards, so it lives
apart from all three and imports none of them.
"""
from __future__ import annotations

import re

_PLACEHOLDER = r"\[[a-z_]+\]"  # VIST's anonymised names: [male], [female], [location] ...
_CONTRACTION = r"n't|'(?:s|re|ve|ll|d|m)"
_SPLIT_CONTRACTION = re.compile(rf"(?<=\w)(?=(?:{_CONTRACTION})\b)")
_TOKEN = re.compile(
    rf"{_PLACEHOLDER}|(?:{_CONTRACTION})\b|\d+(?:[.,]\d+)+|\w+(?:['-]\w+)*|\.{{2,}}|[^\w\s]"
)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def normalize_text(text: str) -> str:
    """Lowercase and tokenise ``text`` the way VIST's ``text`` field is written.

    Punctuation becomes separate tokens, contractions split as in the Penn Treebank
    (``didn't`` -> ``did n't``), placeholders such as ``[male]`` stay one token, numbers
    keep their ``.``/``,`` and tokens are joined by single spaces. Idempotent, so VIST's
    own text comes back unchanged.

    >>> normalize_text("[Female] didn't know   it was her party!")
    "[female] did n't know it was her party !"
    >>> normalize_text("[female] did n't know it was her party !")
    "[female] did n't know it was her party !"
    """
    text = text.translate(_QUOTES).lower()
    # splitting can expose a new word boundary ("xn'tn't"), so split until nothing changes
    while (split := _SPLIT_CONTRACTION.sub(" ", text)) != text:
        text = split
    return " ".join(_TOKEN.findall(text))
