"""VIST's text form: lowercase, space-separated tokens, ``[male]``-style placeholders.

Shared by evaluation (scoring), the instruction tasks and the RL rewards, so it lives
apart from all three and imports none of them.

VIST's ``text`` is already tokenised (Penn Treebank style), and some of its tokens hold
punctuation: ``mr.``, ``st.``, ``t.v``, ``d.j``, ``w/``, ````` `` ``, ``''``, ``--``,
``night..``, ``jack-o-lanterns``. Published scores are computed on that text as it is, so
:func:`normalize_text` keeps every whitespace token already in that form exactly, and only
tidies free text from models and users: capitals, punctuation glued to words, unsplit
contractions, straight double quotes.
"""
from __future__ import annotations

import re

_PLACEHOLDER = r"\[[a-z_]+\]"  # VIST's anonymised names: [male], [female], [location] ...
_CONTRACTION = r"n't|'(?:s|re|ve|ll|d|m)"
_SPLIT_CONTRACTION = re.compile(rf"(?<=\w)(?=(?:{_CONTRACTION})\b)")
_ACRONYM = r"[a-z](?:\.[a-z])+\.?"  # t.v  d.j  u.s.  a.m.

# Abbreviations a PTB tokeniser keeps with their period: VIST writes "mr. [male]", and
# "mr ." would score as two other tokens. Only ones that are not also words: "we sat." and
# "in the sun." end a sentence.
ABBREVIATIONS = frozenset("""
    mr mrs ms dr st jr sr vs etc ok mt ft lt sgt capt prof inc corp ltd bros ave blvd rd
    approx dept jan feb apr jun jul aug sep sept oct nov dec mon tue thu fri
""".split())

# One whitespace token already in VIST's form, kept exactly as it is.
_WORD = r"[a-z0-9]+(?:['-][a-z0-9]+)*"  # words, jack-o-lanterns, o'clock
_VIST_TOKEN = re.compile(
    rf"""{_PLACEHOLDER}                      # [male], [location]
    | (?:{_CONTRACTION})                     # n't 's 're 've 'll 'd 'm
    | {_WORD}(?:\.\.)?                       # words; night.. (VIST's tokeniser left it glued)
    | \d+(?:[.,:/]\d+)+                      # 1,000  3.5  10:30  9/11
    | {_ACRONYM}
    | [a-z0-9]+/[a-z0-9]*                    # w/  w/o  24/7
    | [^\w\s"]+                              # . , ! ... `` '' -- ( ) ?!
    """, re.VERBOSE)

# Free text -> tokens, tried left to right at each position.
_TOKEN = re.compile(
    rf"{_PLACEHOLDER}|(?:{_CONTRACTION})\b|\d+(?:[.,:/]\d+)+|{_ACRONYM}|\w+(?:['-]\w+)*"
    r"|\.{2,}|-{2,}|``|''|[^\w\s]")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_OPENING_QUOTE = re.compile(r'^"')  # as PTB: a quote that opens a word is ``, any other ''


def _is_vist_token(token: str) -> bool:
    if token.endswith(".") and token[:-1] in ABBREVIATIONS:
        return True
    return bool(_VIST_TOKEN.fullmatch(token)) and not _SPLIT_CONTRACTION.search(token)


def _tokenise(word: str) -> list[str]:
    """One whitespace token of free text -> VIST tokens."""
    word = _OPENING_QUOTE.sub("`` ", word).replace('"', " ''")
    while (split := _SPLIT_CONTRACTION.sub(" ", word)) != word:  # "xn'tn't" needs two passes
        word = split
    out = []
    for part in word.split():
        if _is_vist_token(part):
            out.append(part)
            continue
        abbreviation = re.match(r"([a-z]+)\.", part)
        if abbreviation and abbreviation.group(1) in ABBREVIATIONS:  # "mr.smith" -> "mr." "smith"
            out.append(abbreviation.group(0))
            part = part[abbreviation.end():]
        out.extend(_TOKEN.findall(part))
    return out


def normalize_text(text: str) -> str:
    """``text`` in VIST's form: lowercase, punctuation and contractions as separate tokens.

    A whitespace token already in VIST's form (see the module docstring) is kept exactly,
    so VIST's own text comes back unchanged; other tokens are split: punctuation becomes
    tokens, ``didn't`` becomes ``did n't``, ``"`` becomes ````` `` ````` or ``''``, numbers
    and ``mr.``-style abbreviations keep their periods. Everything is lowercased and joined
    by single spaces.

    >>> normalize_text("Mr. Smith didn't go.")
    "mr. smith did n't go ."
    >>> normalize_text("we met mr. [male] w/ the t.v crew -- `` wow '' .")
    "we met mr. [male] w/ the t.v crew -- `` wow '' ."
    """
    return " ".join(t for word in text.translate(_QUOTES).lower().split()
                    for t in ([word] if _is_vist_token(word) else _tokenise(word)))


# What readable() writes for VIST's placeholders: a few common names and places.
READABLE_NAMES = {
    "[male]": ("Tom", "James", "Leo", "Omar", "Ken", "Luis"),
    "[female]": ("Anna", "Maria", "Lucy", "Mei", "Sara", "Ines"),
    "[location]": ("Lisbon", "Kyoto", "Boston", "Oslo", "Seville", "Quebec"),
    "[organization]": ("Northwind", "Acme", "Globex", "Initech", "Umbrella", "Stark"),
    "[person]": ("Alex", "Sam", "Robin", "Jo", "Kim", "Max"),
}


def readable(text: str, choice: int | None = None) -> str:
    """``text`` with VIST's placeholders written as names and places, for reading only.

    Every ``[male]`` of one text is the same man (VIST cannot tell two apart), so each
    placeholder gets one name throughout. Which name comes from ``choice`` (default: a hash
    of the text, so different stories meet different people and one story is always told
    the same way). Stored and scored text keeps its placeholders: render, never train on it.

    >>> readable("[female] met [male] in [location] . [male] waved .", choice=0)
    'Anna met Tom in Lisbon . Tom waved .'
    >>> readable("a [unknown] tag stays .")
    'a [unknown] tag stays .'
    """
    import zlib
    index = zlib.crc32(text.encode()) if choice is None else choice

    def name(match: re.Match) -> str:
        names = READABLE_NAMES.get(match.group(0))
        return names[index % len(names)] if names else match.group(0)
    return re.sub(_PLACEHOLDER, name, text)
