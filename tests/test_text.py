"""text.py: normalize_text is the identity on VIST's tokenised text and tidies free text."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visiontales.data.text import ABBREVIATIONS, normalize_text

# Token shapes of real VIST text (AREL's sample_results and the VIST SIS files), each one
# whitespace token that a tokeniser must not split again.
VIST_SHAPES = (
    "[male] [female] [location] [organization] 's n't 'm 're 'd 'll 've ... `` '' -- : ( ) "
    "! ? , . jack-o-lanterns soldiers-to-be san-patrick ms. mr. dr. st. jr. ok. night.. w/ "
    "t.v d.j 1,000 3.5 10:30 o'clock"
).split()


@pytest.mark.parametrize("token", VIST_SHAPES)
def test_every_vist_token_shape_is_kept(token):
    assert normalize_text(token) == token
    assert normalize_text(f"we saw {token} there .") == f"we saw {token} there ."


def test_vist_sentences_are_unchanged():
    for text in ("[male] met mr. [male] at the st. louis fair w/ his t.v crew -- `` wow '' .",
                 "the jack-o-lanterns ( all of them ) were lit : what a night.. i 'm sure .",
                 "ms. [female] did n't know [organization] 's d.j jr. ... ok. ?"):
        assert normalize_text(text) == text


@pytest.mark.parametrize("free, vist", [
    ("Mr. Smith didn't go.", "mr. smith did n't go ."),
    ("[Female] didn't know   it was her party!", "[female] did n't know it was her party !"),
    ('"Hello," she said.', "`` hello , '' she said ."),
    ("\u201cQuoted\u201d and it\u2019s fine", "`` quoted '' and it 's fine"),
    ("We met at 10:30 a.m.! It cost $1,000.", "we met at 10:30 a.m. ! it cost $ 1,000 ."),
    ("Wait... we-- went to St.Louis w/ Dr. Who", "wait ... we -- went to st. louis w/ dr. who"),
    ("[Male]'s car, wasn't it?", "[male] 's car , was n't it ?"),
    ("[Male] met [female] at [location]'s gate.", "[male] met [female] at [location] 's gate ."),
    ("We sat in the sun. It was ok.", "we sat in the sun . it was ok."),  # "ok." as VIST has it
])
def test_free_text_is_tidied_into_vist_form(free, vist):
    assert normalize_text(free) == vist


_WORD = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,6}){0,2}", fullmatch=True)
VIST_TOKENS = st.one_of(
    st.sampled_from(VIST_SHAPES),
    _WORD,
    _WORD.map(lambda w: w + ".."),
    st.from_regex(r"[0-9]{1,3}([.,:/][0-9]{1,3}){1,2}", fullmatch=True),
    st.from_regex(r"[a-z](\.[a-z]){1,3}\.?", fullmatch=True),
    st.sampled_from(sorted(ABBREVIATIONS)).map(lambda a: a + "."),
    st.from_regex(r"[.,!?:;()`'-]{1,3}", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(VIST_TOKENS, max_size=40))
def test_text_in_vist_form_is_unchanged(tokens):
    text = " ".join(tokens)
    assert normalize_text(text) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_is_idempotent_and_single_spaced(text):
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert "  " not in once and once == once.strip() and once == once.lower()


def test_readable_names_are_consistent_within_a_story_and_leave_other_text_alone():
    from visiontales.data.text import READABLE_NAMES, readable
    story = "[male] met [female] at [location] . [male] smiled at [female] . mr. [male] left ."
    shown = readable(story)
    words = shown.split()
    assert "[" not in shown and shown == readable(story)             # stable for one story
    male, female, place = words[0], words[2], words[4]
    assert words[6] == male and words[9] == female and words[12] == male   # one person each
    assert {male, female, place} <= {n for names in READABLE_NAMES.values() for n in names}
    assert shown.replace(male, "[male]").replace(female, "[female]").replace(place, "[location]") == story
    others = {readable(f"[male] walked {i} miles .").split()[0] for i in range(40)}
    assert len(others) > 1                                           # stories meet different people
