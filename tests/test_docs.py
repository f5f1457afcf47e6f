"""The docs: the site builds with --strict (every page, link and API docstring), the README
stays a front page, and what it links to exists."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 250


def test_every_local_link_of_the_readme_exists():
    links = [link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", README)
             if not link.startswith(("http://", "https://", "#", "mailto:"))]
    assert links and [link for link in links if not (ROOT / link).exists()] == []


def test_every_docs_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages and {p for p in pages if p not in nav} == set()


@pytest.mark.slow  # about half a minute: mkdocstrings imports and renders every module
def test_the_docs_site_builds_strict(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "model" / "index.html").read_text(encoding="utf-8")
    assert "StoryModel" in api and "generate_from_features" in api   # the reference comes from the docstrings
    assert "language-pycon" in api or "highlight" in api             # doctest examples render as code
