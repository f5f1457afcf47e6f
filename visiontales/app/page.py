"""A demo page: photos in, a story out, and how well each sentence matches each photo.

``visiontales serve --tiny`` opens it (Gradio, the ``[demo]`` extra). The page is a thin
shell over :func:`tell`, which works without Gradio::

    import visiontales as vt
    from visiontales.app.page import tell
    model = vt.StoryModel.tiny(vocab_from=vt.sample_dataset("train"))
    result = tell(list(vt.sample_dataset("val")[0]["image_paths"]), model)
    print(result.story, result.grounding)
    print(result.similarity)            # rows: sentences, columns: "photo 1".."photo N"
"""
from __future__ import annotations

import logging
import os
import re
import socket
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch
from PIL import Image

from visiontales.data.sample import sample_dataset
from visiontales.data.images import ImageLike, UnreadableImageError, load_rgb
from visiontales.model.backbones import TINY_CLIP
from visiontales.model.tower import joint_embeddings
from visiontales.evaluation.clipscore import model_grounding
from visiontales.evaluation.object_check import object_accuracy, story_check
from visiontales.data.text import readable
from visiontales.utils import require

if TYPE_CHECKING:  # gradio is an optional extra, imported only when a page is built
    import gradio

    from visiontales.data.dataset import StoryDataset
    from visiontales.model.story_model import StoryModel

MAX_PHOTOS = 8             # the model was trained on windows of 3; more than 8 strays too far
MAX_SIDE = 4096            # larger images are downscaled, not rejected...
MAX_PIXELS = 40_000_000
DOWNSCALE_TO = 1024        # ...to this longest side (CLIP sees 224 px anyway)
MODES = ("greedy", "beam search", "sampling")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
log = logging.getLogger(__name__)


class DemoInputError(ValueError):
    """A request the demo cannot serve, with a message meant for the person who sent it.

    >>> str(DemoInputError("add at least one photo"))
    'add at least one photo'
    """


@dataclass
class TellResult:
    """What :func:`tell` returns: the story, its sentences and how they match the photos."""
    story: str
    sentences: list[str]
    similarity: pd.DataFrame  # (sentences, photos): CLIP cosine of each sentence with each photo
    grounding: float          # CLIPScore of the whole story vs the photos, 0 to 2.5


def split_sentences(text: str) -> list[str]:
    """Sentences of a VIST-style story (lower case, punctuation split off by spaces).

    >>> split_sentences("we went to the beach . it was fun ! did we swim ? yes")
    ['we went to the beach .', 'it was fun !', 'did we swim ?', 'yes']
    """
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def prepare_photos(images: Sequence[ImageLike] | ImageLike | None,
                   max_photos: int = MAX_PHOTOS) -> list[Image.Image]:
    """Check 1..``max_photos`` photos and load them as RGB, huge ones downscaled.

    Raises :class:`DemoInputError` naming the photo when one is not an image.

    >>> [im.size for im in prepare_photos([Image.new("RGB", (6000, 3000))])]
    [(1024, 512)]
    """
    if images is None or isinstance(images, (str, os.PathLike, Image.Image)):
        images = [] if images is None else [images]
    images = list(images)
    if not images:
        raise DemoInputError(f"No photos yet: add 1 to {max_photos} photos "
                             "(the model was trained on sequences of 3).")
    if len(images) > max_photos:
        raise DemoInputError(f"{len(images)} photos is too many: the model takes 1 to {max_photos} "
                             f"(it was trained on sequences of 3). Remove {len(images) - max_photos}.")
    photos = []
    for number, image in enumerate(images, 1):
        if not isinstance(image, (str, os.PathLike, Image.Image)):
            raise DemoInputError(f"photo {number} is a {type(image).__name__}, "
                                 "not a file path or a PIL image.")
        try:
            photo = load_rgb(image)
        except UnreadableImageError as err:
            reason = str(err).removeprefix(f"{Path(image)}: ").removeprefix("unreadable image: ")
            raise DemoInputError(f"photo {number} ({Path(image).name}) is not a readable image "
                                 f"({reason}). Use a JPEG, PNG, GIF or BMP file.") from err
        if max(photo.size) > MAX_SIDE or photo.width * photo.height > MAX_PIXELS:
            photo.thumbnail((DOWNSCALE_TO, DOWNSCALE_TO))
        photos.append(photo)
    return photos


@torch.no_grad()
def sentence_similarity(model: "StoryModel", sentences: Sequence[str],
                        photos: Sequence[ImageLike]) -> pd.DataFrame:
    """CLIP cosine of each sentence (rows) with each photo (columns "photo 1".."photo N")."""
    import open_clip
    columns = [f"photo {i}" for i in range(1, len(photos) + 1)]
    if not sentences:
        return pd.DataFrame(columns=columns, dtype=float).rename_axis("sentence")
    image_emb = joint_embeddings(model, photos).float().cpu()  # (N, D), L2-normalised
    tokens = open_clip.get_tokenizer(model.config.clip)(list(sentences)).to(model.device)
    text_emb = torch.nn.functional.normalize(model.clip.encode_text(tokens).float().cpu(), dim=-1)
    return pd.DataFrame((text_emb @ image_emb.T).numpy(), index=pd.Index(sentences, name="sentence"),
                        columns=columns)


def tell(images: Sequence[ImageLike], model: "StoryModel", num_beams: int = 1, do_sample: bool = False,
         temperature: float = 1.0, top_p: float = 0.9, max_new_tokens: int = 60,
         instruction: str | None = None, seed: int | None = None) -> TellResult:
    """A story for photos in order (paths or PIL images), with how well it matches them.

    ``instruction`` replaces the model's prompt (empty: the model's default). Raises
    :class:`DemoInputError` with a message for the user on bad input.

    >>> import visiontales as vt
    >>> model = vt.StoryModel.tiny(vocab_from=vt.sample_dataset("train"))
    >>> result = tell(list(vt.sample_dataset("val")[0]["image_paths"]), model, max_new_tokens=8)
    >>> result.similarity.shape[1], 0 <= result.grounding <= 2.5
    (3, True)
    """
    photos = prepare_photos(images, min(MAX_PHOTOS, model.config.max_images))
    if num_beams < 1 or temperature <= 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
        raise DemoInputError("decoding needs beam size >= 1, temperature > 0, 0 < top-p <= 1 "
                             "and at least one new token.")
    prompt = instruction.strip() if instruction and instruction.strip() else None
    story = model.generate([photos], max_new_tokens=int(max_new_tokens), num_beams=int(num_beams),
                           do_sample=do_sample, top_p=top_p, temperature=temperature,
                           prompt=prompt, seed=seed, progress=False)[0]
    sentences = split_sentences(story)
    grounding = model_grounding(model, [story], [photos])[0]
    return TellResult(story, sentences, sentence_similarity(model, sentences, photos), grounding)


# ----------------------------------------------------------------------------- the page

def _gradio():
    """The gradio module, or one sentence on how to install it."""
    return require("gradio", "demo", "the demo page")


INTRO = """# visiontales: photos in, a story out
Add **1 to {max} photos** (the model was trained on sequences of 3), put them in the order of
the story, then press **Tell the story**. The table shows how strongly each sentence matches
each photo (CLIP cosine similarity; the best photo of each sentence is in bold): a story that
follows the photos lights up the diagonal. <small>Model: GPT-2 `{lm}`, CLIP `{clip}`,
prefix `{prefix}`.{note}</small>{checks}"""
CHECKS = """

**Does this model use the photos?** On the {n} held-out sample windows it names the right
object {where} for **{accuracy:.0%}** of the photos (chance: {chance:.0%}), and its eval loss rises
from {eval_loss:.2f} to **{eval_loss_shuffled:.2f}** nats per token when the photos are swapped
between windows. Pick a sample sequence to see the object check of each story."""
EMPTY_TABLE = pd.DataFrame(columns=["sentence"])
TINY_NOTE = " The tiny offline model's CLIP is random, so its similarities are noise."


def _paths(gallery: list | None) -> list[str]:
    """File paths of a Gallery value (a list of ``(path, caption)`` pairs or of paths)."""
    return [item[0] if isinstance(item, (list, tuple)) else item for item in gallery or []]


def _captioned(paths: Sequence[str]) -> list[tuple[str, str]]:
    return [(p, f"photo {i}") for i, p in enumerate(paths, 1)]


def _styled(similarity: pd.DataFrame):
    """The similarity table for the page: a sentence column, greens by value, best in bold."""
    frame = similarity.reset_index()
    photos = list(similarity.columns)
    if frame.empty:
        return frame
    return (frame.style.format("{:.2f}", subset=photos)
            .background_gradient(cmap="Greens", subset=photos, axis=None)
            .highlight_max(subset=photos, axis=1, props="font-weight: bold"))


def _error(message: str, title: str = "Cannot tell a story yet.") -> str:
    return f"**{title}** {message}"


def photo_checks(model: "StoryModel") -> str:
    """The intro's paragraph on the sample data: object accuracy and the photo-dependence gap."""
    from visiontales.training.photo_dependence import photo_dependence
    val = sample_dataset("val")
    where = "at the right photo" if model.config.prefix != "mean" else "in any order"
    return CHECKS.format(n=len(val), where=where, **object_accuracy(model, val),
                         **{k: v for k, v in photo_dependence(model, val).items() if k != "gap"})


def photo_folders(sample: "StoryDataset | None" = None) -> list[str]:
    """The folders of the sample picker's photos, for ``launch(allowed_paths=...)``: Gradio
    serves only files under the working directory, the temp folder (uploads) and these, and
    the shipped photos live inside the installed package.

    >>> [Path(folder).name for folder in photo_folders()]
    ['images']
    """
    frame = (sample if sample is not None else sample_dataset("val")).frame
    return sorted({str(Path(path).resolve().parent) for paths in frame["image_paths"] for path in paths})


def build_app(model: "StoryModel", sample: "StoryDataset | None" = None,
              first_sample: bool = False) -> "gradio.Blocks":
    """The demo page as a ``gradio.Blocks``: :func:`serve` starts it, or
    ``.launch(allowed_paths=photo_folders(sample))`` (the picker's photos are served from there).

    ``sample`` is the dataset the sample picker offers (default: the shipped val split);
    ``first_sample`` opens the page with its first sequence loaded. The story endpoint is
    ``/tell`` for ``gradio_client``: inputs photos (gallery), mode, beam size, temperature,
    top-p, seed, max new tokens, instruction, readable names (optional); outputs story,
    grounding, table, status (with the object check for sample photos).
    """
    gr = _gradio()
    frame = (sample if sample is not None else sample_dataset("val")).frame
    frame = frame.drop_duplicates("photo_ids").reset_index(drop=True)
    choices = [(f"{i + 1}. {' '.join(row.text.split()[:9])}…", i) for i, row in frame.iterrows()]
    first = _captioned(list(frame["image_paths"][0])) if first_sample and len(frame) else None
    max_photos = min(MAX_PHOTOS, model.config.max_images)
    tiny = model.config.clip == TINY_CLIP  # trained on the sample data: its objects are known

    def add_photos(files, gallery):
        paths, problems = _paths(gallery), []
        for path in files or []:
            try:
                prepare_photos([path])
                paths.append(path)
            except DemoInputError as err:
                problems.append(str(err).replace("photo 1 ", "Skipped ", 1))
        if len(paths) > max_photos:
            problems.append(f"{len(paths)} photos: the model takes at most {max_photos}; "
                            "remove some with the order box.")
        return _captioned(paths), " ".join(problems)

    def pick_sample(index):
        if index is None:
            return gr.skip(), ""
        row = frame.iloc[int(index)]
        return _captioned(list(row.image_paths)), f"Sample loaded. A reference story: *{row.text}*"

    def reorder(gallery, order):
        paths = _paths(gallery)
        try:
            picked = [int(n) for n in re.split(r"[\s,;]+", order.strip()) if n]
        except ValueError:
            return gr.skip(), order, _error(f"{order!r} should be photo numbers, like 2,1,3.",
                                            "Cannot reorder.")
        if not picked or len(set(picked)) != len(picked) or not all(1 <= n <= len(paths) for n in picked):
            return gr.skip(), order, _error(f"Give each photo number (1 to {len(paths)}) at most once, "
                                            "like 2,1,3; leave one out to remove it.", "Cannot reorder.")
        return _captioned([paths[n - 1] for n in picked]), "", ""

    def tell_story(gallery, mode, beams, temperature, top_p, seed, max_new_tokens, instruction,
                   names=False):
        try:
            result = tell(_paths(gallery), model, num_beams=int(beams) if mode == "beam search" else 1,
                          do_sample=mode == "sampling", temperature=float(temperature),
                          top_p=float(top_p), max_new_tokens=int(max_new_tokens), instruction=instruction,
                          seed=int(seed) if mode == "sampling" and seed is not None else None)
        except ValueError as err:  # DemoInputError, UnreadableImageError and other bad values
            message = str(err)
        except Exception:  # a bug must not take the page down or show a traceback
            log.exception("tell failed")
            message = "Something went wrong on the server (it is logged there)."
        else:
            note = story_check(result.story, _paths(gallery)) or ""
            note = note if result.story else "The model ended the story at once; try sampling."
            if names:  # for reading only: the table's sentences get the same names as the story
                choice = zlib.crc32(result.story.encode())
                result.story = readable(result.story, choice)
                result.similarity.index = [readable(t, choice) for t in result.similarity.index]
                result.similarity.index.name = "sentence"
            return result.story, round(result.grounding, 3), _styled(result.similarity), note
        gr.Warning(message)  # a toast, seen wherever the page is scrolled
        return "", None, EMPTY_TABLE, _error(message)

    def show_controls(mode):
        return (gr.update(visible=mode == "beam search"),) + (gr.update(visible=mode == "sampling"),) * 3

    with warnings.catch_warnings():
        # Gradio 6 moved theme/css to launch() but still honours them here; 4 and 5 need them here
        warnings.simplefilter("ignore", UserWarning)
        font = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the page works offline
        app = gr.Blocks(title="visiontales", analytics_enabled=False,  # never phones home
                        theme=gr.themes.Soft(font=font, font_mono=["monospace"]),
                        css="#story textarea {font-size: 1.1rem; line-height: 1.5}")
    with app:
        gr.Markdown(INTRO.format(max=max_photos, lm=model.config.lm, clip=model.config.clip,
                                 prefix=model.config.prefix,
                                 note=TINY_NOTE if tiny else "",
                                 checks=photo_checks(model) if tiny else ""))
        with gr.Row():
            with gr.Column(scale=5):
                with gr.Row():
                    upload = gr.UploadButton("Add photos", file_count="multiple", file_types=["image"],
                                             elem_id="add-photos", variant="secondary")
                    clear = gr.Button("Clear photos")
                picker = gr.Dropdown(choices, value=None, label="…or pick a sample sequence",
                                     info="held-out sequences of the shipped data, by their reference story",
                                     elem_id="sample-picker")
                gallery = gr.Gallery(first, label="Photos, in story order", columns=4, height=220,
                                     object_fit="contain", interactive=False, elem_id="photos")
                with gr.Row():
                    order = gr.Textbox(label="Reorder", placeholder="e.g. 3,1,2 (leave a number out to "
                                       "remove that photo)", scale=4)
                    apply_order = gr.Button("Apply order", scale=1)
                mode = gr.Radio(list(MODES), value="greedy", label="Decoding")
                beams = gr.Slider(2, 8, value=3, step=1, label="Beam size", visible=False)
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature", visible=False)
                top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p (nucleus)", visible=False)
                seed = gr.Number(0, precision=0, label="Seed", visible=False)
                max_new_tokens = gr.Slider(10, 120, value=60, step=5, label="Story length cap (tokens)")
                instruction = gr.Textbox(label="Instruction (optional)", placeholder=model.config.prompt)
                names = gr.Checkbox(False, label="Readable names",
                                    info="write VIST's [male], [female], [location] as names and places")
                button = gr.Button("Tell the story", variant="primary", elem_id="tell")
            with gr.Column(scale=6):
                status = gr.Markdown(label="Status", elem_id="status")
                story = gr.Textbox(label="Story", lines=5, interactive=False, elem_id="story")
                grounding = gr.Number(label="Grounding", interactive=False,
                                      info="CLIPScore of the story vs the photos: 0 to 2.5, higher "
                                           "follows the photos more")
                table = gr.Dataframe(EMPTY_TABLE, label="Sentence x photo match (CLIP cosine)",
                                     interactive=False, max_chars=48, column_widths=["50%"],
                                     elem_id="similarity")

        upload.upload(add_photos, [upload, gallery], [gallery, status], api_name="add_photos")
        clear.click(lambda: ([], ""), None, [gallery, status], api_name="clear")
        picker.input(pick_sample, picker, [gallery, status], api_name="pick_sample")
        apply_order.click(reorder, [gallery, order], [gallery, order, status], api_name="reorder")
        mode.change(show_controls, mode, [beams, temperature, top_p, seed], api_name="show_controls")
        button.click(tell_story, [gallery, mode, beams, temperature, top_p, seed, max_new_tokens,
                                  instruction, names], [story, grounding, table, status], api_name="tell",
                     scroll_to_output=True)
    return app


# ----------------------------------------------------------------------------- serving

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve(model: "StoryModel | None" = None, model_dir: str | os.PathLike | None = None,
          tiny: bool = False, sample: bool = False, port: int | None = None, host: str = "127.0.0.1",
          open_browser: bool = False, block: bool = True) -> "gradio.Blocks":
    """Start the demo page on ``host`` (a free port unless ``port``) and print its URL.

    The model is ``model``, else loaded from ``model_dir``, else (``tiny`` or ``sample``)
    the tiny offline model trained on the shipped data first (minutes on a CPU). ``sample``
    opens the page with a sample sequence loaded. ``block=False`` returns at once; stop
    the page with ``app.close()``::

        app = serve(model_dir="runs/vist/final", block=False)
    """
    _gradio()  # fail early, with the install line, when Gradio is missing
    if model is None:
        if model_dir is not None:
            from visiontales.model.story_model import StoryModel
            model = StoryModel.from_pretrained(model_dir)
        elif tiny or sample:
            from visiontales.recipes.tiny import train_tiny_model
            print("training the tiny model on the shipped data (a few minutes on a CPU)...", flush=True)
            model = train_tiny_model()
        else:
            raise ValueError("serve needs a model: give --model DIR, --tiny or --sample")
    app = build_app(model, first_sample=sample)
    port = port or free_port(host)
    print(f"visiontales demo page: http://{host}:{port}  (Ctrl+C stops it)", flush=True)
    app.launch(server_name=host, server_port=port, inbrowser=open_browser, allowed_paths=photo_folders(),
               prevent_thread_lock=not block, quiet=True, show_error=False)
    return app
