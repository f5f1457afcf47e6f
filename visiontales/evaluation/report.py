"""One self-contained HTML page to read systems side by side: the metric table on top,
then per photo sequence its thumbnails, every system's story and the references.

Images are embedded as base64 JPEG thumbnails and all text is escaped, so the file can
be mailed or opened offline and a story can never inject markup.

>>> import tempfile, os
>>> path = write_report(os.path.join(tempfile.mkdtemp(), "report.html"), items={},
...                     systems={"ours": {"1_2_3": "a day at the beach ."}},
...                     references={"1_2_3": ["we went to the beach ."]}, metrics_table=None)
>>> "a day at the beach" in path.read_text()
True
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import pandas as pd

from visiontales.data.images import ImageLike, image_data_url
from visiontales.utils import atomic_path

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.05rem; margin: 0 0 .5rem; color: #555; }
table.metrics { border-collapse: collapse; margin: 1rem 0 2rem; font-size: .9rem; }
table.metrics th, table.metrics td { padding: .3rem .7rem; border-bottom: 1px solid #ddd;
       text-align: right; }
.item { border: 1px solid #e3e3e3; border-radius: 8px; padding: 1rem; margin: 1rem 0;
        break-inside: avoid; }
.photos img { height: 120px; margin-right: .4rem; border-radius: 4px; }
.photos .missing { display: inline-block; width: 120px; height: 120px; background: #eee;
        color: #888; font-size: .75rem; text-align: center; vertical-align: top; }
.story { margin: .4rem 0; } .story b { display: inline-block; min-width: 7rem; color: #1a5e9a; }
.refs { color: #666; font-size: .9rem; margin-top: .5rem; } .refs ul { margin: .2rem 0; }
"""


def _thumbnail(image: ImageLike) -> str:
    try:
        return f'<img src="{image_data_url(image)}" alt="photo">'
    except (OSError, ValueError) as err:  # one bad photo should not sink the whole report
        return f'<span class="missing">{html.escape(str(err)[:80])}</span>'


def page(title: str, body: str) -> str:
    """A complete HTML document with the report's stylesheet.

    >>> page("t", "<p>x</p>").startswith("<!DOCTYPE html>")
    True
    """
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def photos_html(images: Sequence[ImageLike]) -> str:
    """Embedded thumbnails of one photo sequence (a placeholder for unreadable files)."""
    return '<div class="photos">' + "".join(_thumbnail(im) for im in images) + "</div>"


def write_report(
    path: str | os.PathLike,
    items: Mapping[Hashable, Sequence[ImageLike]] | None,
    systems: Mapping[str, Mapping[Hashable, str]],
    references: Mapping[Hashable, Sequence[str]] | None = None,
    metrics_table: pd.DataFrame | None = None,
    title: str = "visiontales report",
    max_items: int | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the report to ``path`` atomically and return the path.

    ``items`` maps each key to its image paths, ``systems`` maps a system name to its
    stories by key, ``references`` maps a key to its reference stories and
    ``metrics_table`` is e.g. :func:`visiontales.evaluation.metrics.as_frame`'s output. Keys are
    shown in the order they first appear in ``items``, the systems, then ``references``;
    ``max_items`` keeps the first ones only (thumbnails make a page of thousands heavy).
    ``notes`` are paragraphs under the table (e.g. the agreement lines of
    :func:`visiontales.evaluation.agreement.agreement_lines`). Text cells of the table
    (``"7.20 ± 0.31"``) are shown as they are.

    >>> import tempfile, visiontales as vt
    >>> row = vt.sample_dataset("val")[0]
    >>> key = "_".join(row["photo_ids"])
    >>> out = write_report(Path(tempfile.mkdtemp()) / "report.html", {key: row["image_paths"]},
    ...                    {"ours": {key: "a story ."}}, {key: [row["text"]]})
    >>> "a story ." in out.read_text() and out.read_text().count("<img") == 3
    True
    """
    items, references = items or {}, references or {}
    keys = list(dict.fromkeys([*items, *(k for s in systems.values() for k in s), *references]))
    shown = keys[:max_items] if max_items is not None else keys
    parts = []
    if metrics_table is not None:
        parts.append(metrics_table.to_html(classes="metrics", border=0, float_format="%.2f",
                                           na_rep="n/a"))  # to_html escapes cell text
    parts.extend(f'<p class="note">{html.escape(note)}</p>' for note in notes)
    parts.append(f"<p>{len(shown)} of {len(keys)} sequences, {len(systems)} systems.</p>")
    for key in shown:
        block = [f'<section class="item"><h2>{html.escape(str(key))}</h2>',
                 photos_html(items.get(key, []))]
        for name, stories in systems.items():
            story = stories.get(key)
            text = html.escape(story) if story is not None else "<i>(no story)</i>"
            block.append(f'<p class="story"><b>{html.escape(name)}</b> {text}</p>')
        if references.get(key):
            block.append('<div class="refs">references<ul>' + "".join(
                f"<li>{html.escape(r)}</li>" for r in references[key]) + "</ul></div>")
        parts.append("\n".join(block) + "</section>")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page(title, "\n".join(parts)), encoding="utf-8")
    return path
