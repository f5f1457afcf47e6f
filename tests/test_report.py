"""report.py: one self-contained, parseable HTML file with every key, story and photo."""
from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import pytest
from PIL import Image

from visiontales.data.sample import sample_dataset
from visiontales.data.images import image_data_url
from visiontales.evaluation.metrics import as_frame, references_from_dataset
from visiontales.evaluation.predictions import keys_for
from visiontales.evaluation.report import write_report


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.attrs, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, name, value or "") for name, value in attrs]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    dataset = sample_dataset("val")
    firsts = list(keys_for(dataset).items())[:4]
    frame = dataset.frame
    items = {key: list(frame.image_paths[row]) for key, row in firsts}
    systems = {
        "ours": {key: f"ours says <b>{i}</b> & more" for i, (key, _) in enumerate(firsts)},
        "baseline": {key: f"baseline story {i} <script>alert(1)</script>"
                     for i, (key, _) in enumerate(firsts)},
    }
    refs = {key: references_from_dataset(dataset)[key] for key, _ in firsts}
    table = as_frame({"ours": {"BLEU-4": 12.345}, "baseline": {"BLEU-4": 6.5}})
    path = write_report(tmp_path_factory.mktemp("r") / "sub" / "report.html", items, systems,
                        refs, table, title="Val <report>")
    source = path.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(source)
    parser.close()
    return source, parser, items, systems, refs


def test_report_has_every_key_story_and_reference(report):
    source, parser, items, systems, refs = report
    text = " ".join(" ".join(parser.text).split())
    for key in items:
        assert key in text
    for stories in systems.values():
        for story in stories.values():
            assert story in text  # present as text, i.e. escaped in the markup
    for references in refs.values():
        for ref in references:
            assert ref in text
    assert "12.35" in text and "Val <report>" in text


def test_report_escapes_text_and_embeds_everything(report):
    source, parser, items, _, _ = report
    assert "<script>" not in source and "<b>0</b>" not in source
    assert "script" not in parser.tags
    sources = [value for tag, name, value in parser.attrs if name in ("src", "href")]
    assert len(sources) == sum(len(paths) for paths in items.values())
    assert all(s.startswith("data:image/jpeg;base64,") for s in sources)
    for src in sources:
        thumb = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert max(thumb.size) <= 160
    assert "http://" not in source and "https://" not in source


def test_missing_photo_gets_a_placeholder_not_a_crash(tmp_path):
    path = write_report(tmp_path / "r.html", {"k": [tmp_path / "nope.jpg"]},
                        {"ours": {"k": "a story ."}}, {"k": ["ref ."]}, None)
    source = path.read_text()
    assert 'class="missing"' in source and "a story ." in source


def test_image_data_url_keeps_aspect_and_never_enlarges():
    def size(url):
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size

    assert size(image_data_url(Image.new("RGB", (640, 320)))) == (160, 80)
    assert size(image_data_url(Image.new("RGB", (50, 40)))) == (50, 40)
    assert size(image_data_url(Image.new("RGBA", (600, 900)), max_side=512)) == (341, 512)
