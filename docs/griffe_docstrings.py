"""A griffe extension for the API reference: the package's docstrings are written for
``help()`` and doctest (reST roles, ``>>>`` examples); this turns them into Markdown that
mkdocstrings renders well. ``>>>`` examples become ``pycon`` code blocks, ``::`` literal
blocks become ``python`` code blocks, and roles such as :class:`~visiontales.Trainer` become
code spans.
"""
from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def markdown(text: str) -> str:
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">>>"):  # a doctest: prompts, continuations, output, up to a blank line
            indent = line[:len(line) - len(stripped)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].strip())
                i += 1
            out += [indent + "```pycon"] + [indent + b for b in block] + [indent + "```"]
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):  # a reST literal block follows
            out.append(line[:-1] if line.endswith(" ::") is False else line[:-3])
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            base = len(line) - len(stripped)
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            if block:
                cut = min(len(b) - len(b.lstrip()) for b in block if b.strip())
                out += ["", " " * base + "```python"] + [" " * base + b[cut:] for b in block] + [" " * base + "```", ""]
            continue
        out.append(ROLE.sub(_role, line.replace("``", "`")))
        i += 1
    return "\n".join(out)


class ReSTToMarkdown(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
