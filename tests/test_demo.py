"""The demo page: tell() without Gradio, the app over HTTP (gradio_client) and in a browser."""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

import visiontales as vt
from visiontales.app.cli.demo import add_commands, cmd_serve
from visiontales.app.page import (DemoInputError, build_app, free_port, photo_folders, prepare_photos,
                                  sentence_similarity, serve, split_sentences, tell)
from visiontales.data.text import readable

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings(  # raised inside gradio's queue under pandas 3, not ours
    "ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword is deprecated:Warning")
NEEDS_GRADIO = "the demo page needs gradio (pip install 'visiontales[demo]')"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def model():
    # untrained: fast, and the same code paths as a trained one
    return vt.StoryModel.tiny(vocab_from=vt.sample_dataset("train"))


@pytest.fixture(scope="module")
def photos() -> list[str]:
    return list(vt.sample_dataset("val")[0]["image_paths"])


@pytest.fixture
def not_an_image(tmp_path) -> Path:
    path = tmp_path / "holiday.jpg"
    path.write_text("these are my holiday notes, not a photo")
    return path


# ----------------------------------------------------------------------------- tell()

def test_tell_returns_story_table_and_grounding(model, photos):
    result = tell(photos, model, max_new_tokens=12)
    assert result.story and result.sentences == split_sentences(result.story)
    assert result.similarity.shape == (len(result.sentences), 3)
    assert list(result.similarity.columns) == ["photo 1", "photo 2", "photo 3"]
    assert result.similarity.abs().le(1 + 1e-5).all().all()  # cosines
    assert 0.0 <= result.grounding <= 2.5


def test_similarity_columns_follow_the_photo_order(model, photos):
    sentences = ["a red kite .", "a dog on the grass ."]
    forward = sentence_similarity(model, sentences, photos)
    backward = sentence_similarity(model, sentences, photos[::-1])
    assert forward.shape == (2, 3) and list(forward.index) == sentences
    assert torch.allclose(torch.tensor(forward.to_numpy()), torch.tensor(backward.to_numpy()[:, ::-1].copy()),
                          atol=1e-5)


def test_split_sentences_on_vist_text():
    assert split_sentences("we went to the beach . it was fun ! why ?") == [
        "we went to the beach .", "it was fun !", "why ?"]
    assert split_sentences("  ") == []


@pytest.mark.parametrize("images, message", [
    ([], "No photos"),
    (None, "No photos"),
    ([Image.new("RGB", (8, 8))] * 9, "9 photos is too many: the model takes 1 to 8"),
])
def test_bad_photo_counts_say_what_to_do(model, images, message):
    with pytest.raises(DemoInputError, match=message):
        tell(images, model)


def test_a_file_that_is_not_an_image_is_named(model, photos, not_an_image):
    with pytest.raises(DemoInputError, match=r"photo 2 \(holiday.jpg\) is not a readable image"):
        tell([photos[0], not_an_image], model)


def test_huge_image_is_downscaled_not_rejected(model, tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 6000), (200, 120, 40)).save(path)
    assert max(prepare_photos([path])[0].size) <= 1024
    result = tell([path], model, max_new_tokens=4)
    assert result.similarity.shape[1] == 1


def test_instruction_replaces_the_prompt(model, photos, monkeypatch):
    seen = []
    original = model.generate
    monkeypatch.setattr(model, "generate",
                        lambda seqs, **kw: seen.append(kw["prompt"]) or original(seqs, **kw))
    tell(photos, model, max_new_tokens=2, instruction="  ")
    tell(photos, model, max_new_tokens=2, instruction="a sad story:")
    assert seen == [None, "a sad story:"]


# ----------------------------------------------------------------------------- the app

@pytest.fixture(scope="module")
def server(model, require):
    require(importlib.util.find_spec("gradio"), NEEDS_GRADIO)
    app = build_app(model)
    port = free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
               allowed_paths=photo_folders())
    yield f"http://127.0.0.1:{port}/"
    app.close()


def _gallery(paths):
    from gradio_client import handle_file
    return [{"image": handle_file(str(p)), "caption": None} for p in paths]


def _tell(client, paths, mode="greedy"):
    return client.predict(_gallery(paths), mode, 3, 1.0, 0.9, 0, 12, "", api_name="/tell")


@pytest.mark.slow
def test_client_gets_a_story_and_server_survives_bad_requests(server, photos, not_an_image):
    from gradio_client import Client
    client = Client(server, verbose=False)
    story, _, _, status = client.predict([], "greedy", 3, 1.0, 0.9, 0, 12, "", api_name="/tell")
    assert story == "" and "No photos" in status
    story, _, _, status = _tell(client, [photos[0], not_an_image])
    assert story == "" and "holiday.jpg" in status and "Traceback" not in status
    story, _, _, status = _tell(client, photos * 3)
    assert story == "" and "9 photos is too many" in status
    for mode in ("greedy", "beam search", "sampling"):  # still serving after each bad request
        story, grounding, table, status = _tell(client, photos, mode)
        assert story and status.startswith("Object check: ") and 0 <= grounding <= 2.5
        assert table["headers"] == ["sentence", "photo 1", "photo 2", "photo 3"]
        assert len(table["data"]) == len(split_sentences(story))


@pytest.mark.slow
def test_client_upload_keeps_images_and_names_the_rest(server, photos, not_an_image):
    from gradio_client import Client, handle_file
    client = Client(server, verbose=False)
    gallery, status = client.predict([handle_file(photos[0]), handle_file(str(not_an_image))], [],
                                     api_name="/add_photos")
    assert len(gallery) == 1 and "Skipped (holiday.jpg)" in status


@pytest.mark.slow
def test_client_reorders_photos(server, photos):
    from gradio_client import Client
    client = Client(server, verbose=False)
    gallery, order, status = client.predict(_gallery(photos), "3,1", api_name="/reorder")
    assert [Path(item["image"]).name for item in gallery] == [Path(photos[2]).name, Path(photos[0]).name]
    assert [item["caption"] for item in gallery] == ["photo 1", "photo 2"]
    _, order, status = client.predict(_gallery(photos), "1,1,7", api_name="/reorder")
    assert order == "1,1,7" and "Cannot reorder" in status


@pytest.mark.slow
def test_serve_prints_the_url_and_answers(model, capsys, require):
    require(importlib.util.find_spec("gradio"), NEEDS_GRADIO)
    import httpx
    app = serve(model=model, block=False)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", capsys.readouterr().out).group(0)
        assert httpx.get(url, timeout=30).status_code == 200
    finally:
        app.close()
    with pytest.raises(ValueError, match="--model DIR, --tiny or --sample"):
        serve()


def test_serve_command_flags():
    parser = argparse.ArgumentParser(prog="visiontales")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--tiny", "--port", "7861"])
    assert (args.tiny, args.model, args.port, args.host) == (True, None, 7861, "127.0.0.1")
    assert args.func is cmd_serve
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--tiny", "--model", "runs/x"])


@pytest.mark.slow
def test_gradio_stays_optional(monkeypatch):
    code = "import sys, visiontales.app.page; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "visiontales\[demo\]"'):
        build_app(None)


# ----------------------------------------------------------------------------- the browser

def _chromium(require) -> str:
    chromium = shutil.which("chromium")
    require(chromium, "Chromium is not installed (Debian: apt-get install chromium); the browser test needs it")
    require(importlib.util.find_spec("playwright"), "the browser test needs playwright (pip install playwright)")
    return chromium


def _page_driver():
    """scripts/make_screenshot.py: the functions that also take docs/demo.png."""
    spec = importlib.util.spec_from_file_location("make_screenshot", REPO / "scripts" / "make_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_screenshot_is_of_the_current_page():
    """docs/demo.png carries the digest of the page.py it was taken of: change the page, then
    run scripts/make_screenshot.py (about two minutes on 2 CPU cores) to take it again."""
    driver = _page_driver()
    with Image.open(REPO / "docs" / "demo.png") as picture:
        taken_of = picture.text.get(driver.STAMP)
    assert taken_of == driver.page_digest(), (
        "visiontales/app/page.py changed since docs/demo.png was taken: run python scripts/make_screenshot.py")


@pytest.mark.slow
def test_browser_uploads_three_photos_and_reads_the_story(server, photos, require):
    chromium = _chromium(require)
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server)
            page.locator("#add-photos").locator("..").locator("input[type=file]").set_input_files(photos)
            expect(page.locator("#photos img")).to_have_count(3, timeout=30_000)
            page.locator("#tell").click()
            story = page.locator("#story textarea")
            expect(story).not_to_have_value("", timeout=60_000)
            text = story.input_value()
        finally:
            browser.close()
    assert text.strip()
    print(f"browser saw the story: {text!r}")


@pytest.mark.slow
def test_the_page_and_the_report_work_from_an_unrelated_folder(model, photos, tmp_path, require, cli):
    """As after ``pip install``: ``visiontales serve`` started in a folder that is not the
    repository (Gradio serves only files under the working directory, the temp folder and the
    allowed paths, and the sample photos live in the installed package). A picked sample
    sequence shows its photos, the story and its object check come back, uploads work;
    ``visiontales report`` run in that folder writes a page whose photos show. docs/demo.png
    is taken the same way (scripts/make_screenshot.py)."""
    chromium, driver = _chromium(require), _page_driver()
    require(importlib.util.find_spec("gradio"), NEEDS_GRADIO)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert REPO not in folder.resolve().parents
    model.save_pretrained(tmp_path / "model")
    with driver.demo_server("--model", str(tmp_path / "model"), cwd=folder) as url:
        seen = driver.tell_a_sample(url, chromium, sample=1, screenshot=tmp_path / "page.png")
        from gradio_client import Client, handle_file   # uploads from there too
        client = Client(url, verbose=False)
        gallery, _ = client.predict([handle_file(p) for p in photos], [], api_name="/add_photos")
        uploaded = _tell(client, [item["image"] for item in gallery])
    log = (folder / driver.SERVER_LOG).read_text()
    assert "InvalidPathError" not in log and "Cannot move" not in log, log
    assert seen["photos"] == 3 and seen["story"].strip()
    # the object check runs only on the shipped photos: they reached the model intact
    assert re.fullmatch(r"Object check: [0-3] of 3 photos named .*", seen["status"]), seen["status"]
    assert len(gallery) == 3 and uploaded[0] and uploaded[3].startswith("Object check: ")

    keys = ["_".join(ids) for ids in vt.sample_dataset("val").frame["photo_ids"]]
    (folder / "tiny.jsonl").write_text("".join(f'{{"key": "{k}", "story": "{seen["story"]}"}}\n'
                                               for k in keys))
    done = cli("report", "--predictions", "tiny.jsonl", "--metrics", "BLEU", "--max-items", "3",
               "--out", "report.html", cwd=folder)
    assert done.returncode == 0, done.stderr
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((folder / "report.html").as_uri())
            shown = page.locator("img").evaluate_all("imgs => imgs.map(img => img.naturalWidth > 0)")
        finally:
            browser.close()
    assert shown and all(shown) and len(shown) >= 9


@pytest.mark.slow
def test_the_page_shows_the_photo_checks_and_readable_names(server, photos, tmp_path):
    """The tiny model's intro states its object accuracy and photo-dependence gap; a story of
    sample photos gets its object check; readable names replace the placeholders (and only on
    the page: the check still reads the story the model wrote)."""
    import urllib.request

    from gradio_client import Client
    page = urllib.request.urlopen(server + "config").read().decode()
    assert "Does this model use the photos?" in page and "chance:" in page
    client = Client(server, verbose=False)
    told = {}
    for names in (False, True):  # the same sampled story (seed 0), with and without names
        told[names], _, table, status = client.predict(_gallery(photos), "sampling", 3, 1.0, 0.9, 0, 40,
                                                       "", names, api_name="/tell")
        assert re.fullmatch(r"Object check: [0-3] of 3 photos named at the right place "
                            r"\(named: .*; the photos show: \w+, \w+, \w+\)", status), status
    assert told[True] == readable(told[False], zlib.crc32(told[False].encode()))
    assert not re.search(r"\[(?:male|female|location)\]", told[True] + str(table["data"]))
    copy = tmp_path / "not-a-sample.png"
    Image.open(photos[0]).rotate(90).save(copy)     # not a shipped photo: no object check
    _, _, _, status = _tell(client, [copy])
    assert status == ""
