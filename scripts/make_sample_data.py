"""Write visiontales' shipped sample dataset: procedurally drawn albums in VIST SIS format.

    python scripts/make_sample_data.py [--out DIR]   # DIR defaults to visiontales/data/sample_data

150 albums of 5 photos (96x96). Each photo shows ONE of 8 objects, drawn large with its own
colour and shape, on the background of the album's event (beach, park, ...), so even a
randomly initialised vision network can tell the objects apart. Each sentence names exactly
the object its photo shows. 16 albums have a second story by another "worker" over the same
photos, as real VIST has. Annotations are written in shuffled order, images with mixed
extensions (jpg, png, gif, jpeg, bmp, none). Fixed seed: two runs give identical bytes.
Uses only PIL, json and random.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from PIL import Image, ImageDraw

SEED = 1234
SIZE = 96
N_ALBUMS, N_VAL_ALBUMS, N_DOUBLE_TRAIN, N_DOUBLE_VAL = 150, 24, 30, 6
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "visiontales" / "data" / "sample_data"

# object -> (colour word used in the text, RGB it is drawn in)
OBJECTS = {
    "sun": ("yellow", (250, 205, 30)),
    "tree": ("green", (35, 140, 45)),
    "boat": ("blue", (35, 70, 190)),
    "house": ("red", (200, 40, 40)),
    "car": ("orange", (245, 135, 20)),
    "flower": ("pink", (225, 45, 205)),
    "fish": ("teal", (40, 205, 215)),
    "balloon": ("purple", (135, 50, 195)),
}
# event (album vist_label) -> phrases placing the scene; "{L}" is a location
EVENTS = {
    "beach": ["at the beach", "by the sea"],
    "park": ["in the park", "on the grass"],
    "birthday_party": ["at the birthday party", "at the party"],
    "snowy_day": ["in the snow", "on that snowy day"],
    "city_trip": ["in the city", "downtown in {L}"],
}
# event -> background bands (top, bottom as fractions of the height, RGB)
BANDS = {
    "beach": [(0, .3, (150, 200, 240)), (.3, .5, (70, 140, 160)), (.5, 1, (232, 210, 150))],
    "park": [(0, .4, (175, 215, 245)), (.4, 1, (95, 165, 75))],
    "birthday_party": [(0, .75, (245, 225, 205)), (.75, 1, (160, 110, 70))],
    "snowy_day": [(0, .45, (205, 215, 228)), (.45, 1, (248, 248, 252))],
    "city_trip": [(0, .55, (185, 190, 200)), (.55, 1, (120, 120, 125))],
}
EMOTIONS = ["happy", "excited", "calm", "sad", "surprised", "proud", "tired", "afraid"]
MALE_NAMES = ["John", "Mike", "Tom", "David", "Peter"]
FEMALE_NAMES = ["Mary", "Sarah", "Anna", "Lisa", "Emma"]
LOCATIONS = ["Paris", "Boston", "Chicago", "Rome", "Denver"]
# {P} main person, {Q} another person, {L} location, {c} colour, {o} object, {at} event
# phrase, {e} the story's emotion
PLAIN_TEMPLATES = [
    "{P} saw a {c} {o} {at}.",
    "We found a {o} near the path.",
    "There was a big {c} {o} right in front of us.",
    "{P} pointed at the {o} and laughed.",
    "I took a picture of the {c} {o}.",
    "{Q} had never seen a {o} like this one before.",
    "Then we walked over to the {o} {at}.",
    "At the end of the day, we said goodbye to the {o}.",
]
EMOTION_TEMPLATES = [
    "The {o} made {P} feel so {e}.",
    "Everyone was {e} when the {o} showed up.",
    "What a {c} {o}! We were all very {e}.",
    "{P} was {e} to see the {o} {at}.",
    "My friend from {L} looked at the {o} and felt {e}.",
    "{Q}'s favorite part was the {o}, and it made us {e}.",
]
# extension -> how many photos get it (the rest are .jpg); "" = no extension (JPEG bytes)
EXTENSION_COUNTS = {"": 3, ".bmp": 2, ".jpeg": 6, ".gif": 24, ".png": 40}


def jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> tuple[int, ...]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)


def draw_background(draw: ImageDraw.ImageDraw, event: str, rng: random.Random) -> None:
    """Paint the event's scene: colour bands (sky/sea/sand, wall/floor, ...) and details."""
    for top, bottom, rgb in BANDS[event]:
        draw.rectangle([0, int(top * SIZE), SIZE, int(bottom * SIZE)], fill=jitter(rng, rgb, 10))
    if event == "park":  # grass tufts
        for _ in range(6):
            x, y = rng.randint(0, SIZE), rng.randint(45, SIZE)
            draw.line([x, y, x + 2, y - 5], fill=(60, 120, 50), width=2)
    elif event == "birthday_party":  # confetti
        for _ in range(10):
            x, y = rng.randint(2, SIZE - 4), rng.randint(2, 60)
            draw.ellipse([x, y, x + 3, y + 3], fill=jitter(rng, (200, 190, 160), 40))
    elif event == "snowy_day":  # snowflakes
        for _ in range(12):
            x, y = rng.randint(0, SIZE), rng.randint(0, 42)
            draw.ellipse([x, y, x + 2, y + 2], fill=(255, 255, 255))
    elif event == "city_trip":  # buildings, lane markings
        x = 0
        while x < SIZE:
            width, top = rng.randint(14, 24), rng.randint(8, 30)
            draw.rectangle([x, top, x + width - 2, int(.55 * SIZE)],
                           fill=jitter(rng, (80, 82, 90), 8))
            x += width
        for x in range(4, SIZE, 16):
            draw.rectangle([x, 80, x + 8, 81], fill=(235, 235, 235))


def draw_object(draw: ImageDraw.ImageDraw, name: str, rng: random.Random) -> None:
    """Draw `name` over about 60% of the image width, with jittered position, size (+-15%)
    and colour; it stays clear of the image borders."""
    cx, cy = 48 + rng.randint(-6, 6), 48 + rng.randint(-6, 6)
    s = 29 * rng.uniform(0.85, 1.15)  # half-size
    color = jitter(rng, OBJECTS[name][1], 12)

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [cx + x0 * s, cy + y0 * s, cx + x1 * s, cy + y1 * s]

    def pts(*xy: float) -> list[tuple[float, float]]:
        return [(cx + x * s, cy + y * s) for x, y in zip(xy[::2], xy[1::2])]

    if name == "sun":
        for dx, dy in [(1, 0), (.7, .7), (0, 1), (-.7, .7), (-1, 0), (-.7, -.7), (0, -1),
                       (.7, -.7)]:  # rays
            draw.line(pts(dx * .8, dy * .8, dx * 1.1, dy * 1.1), fill=color, width=3)
        draw.ellipse(box(-.8, -.8, .8, .8), fill=color)
    elif name == "tree":
        draw.rectangle(box(-.15, .3, .15, 1), fill=jitter(rng, (110, 70, 35), 10))
        draw.polygon(pts(0, -1, -.8, .45, .8, .45), fill=color)
    elif name == "boat":
        draw.line(pts(0, -1, 0, .3), fill=(60, 40, 30), width=2)
        draw.polygon(pts(.05, -1, .05, .2, .8, .2), fill=(250, 250, 250))
        draw.polygon(pts(-.05, -.7, -.05, .2, -.6, .2), fill=(235, 235, 235))
        draw.polygon(pts(-1, .3, 1, .3, .7, .8, -.7, .8), fill=color)
    elif name == "house":
        draw.rectangle(box(-.75, -.1, .75, 1), fill=color)
        draw.polygon(pts(-.95, -.1, .95, -.1, 0, -1), fill=jitter(rng, (70, 45, 40), 8))
        draw.rectangle(box(-.15, .45, .15, 1), fill=(90, 50, 30))
    elif name == "car":
        draw.rectangle(box(-.55, -.55, .45, -.1), fill=color)
        draw.rectangle(box(-.42, -.45, .32, -.15), fill=(190, 225, 245))
        draw.rectangle(box(-1, -.1, 1, .45), fill=color)
        for x in (-.55, .55):
            draw.ellipse(box(x - .25, .2, x + .25, .7), fill=(20, 20, 20))
    elif name == "flower":
        draw.line(pts(0, 0, 0, 1), fill=(40, 130, 40), width=3)
        for dx, dy in [(0, -.5), (.45, -.25), (.45, .25), (0, .5), (-.45, .25), (-.45, -.25)]:
            draw.ellipse(box(dx - .32, dy - .2 - .32, dx + .32, dy - .2 + .32), fill=color)
        draw.ellipse(box(-.2, -.4, .2, 0), fill=(250, 250, 240))
    elif name == "fish":
        draw.polygon(pts(.35, 0, 1, -.5, 1, .5), fill=color)
        draw.ellipse(box(-.85, -.45, .5, .45), fill=color)
        draw.ellipse(box(-.6, -.2, -.45, -.05), fill=(10, 10, 10))
    elif name == "balloon":
        draw.line(pts(0, .45, .1, .75, -.05, 1.05), fill=(60, 60, 60), width=1)
        draw.ellipse(box(-.6, -1, .6, .5), fill=color)
        draw.polygon(pts(0, .45, -.08, .58, .08, .58), fill=color)


def draw_photo(event: str, obj: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    draw_background(draw, event, rng)
    draw_object(draw, obj, rng)
    return image


def normalise(sentence: str, people: dict[str, str]) -> str:
    """VIST text normalisation: names -> [male]/[female]/[location], lowercase, punctuation
    and "'s" as their own tokens, single spaces."""
    for name, tag in people.items():
        sentence = re.sub(rf"\b{name}\b", tag, sentence)
    tokens = re.findall(r"\[(?:male|female|location)\]|'s|\w+|[^\w\s]", sentence.lower())
    return " ".join(tokens)


def check_sentence(text: str, original: str, obj: str) -> None:
    """The sentence names its object exactly once, as a token, and no other object word,
    not even inside another word ("sunny", "street", "scared")."""
    others = [o for o in OBJECTS if o != obj and (o in text or o in original.lower())]
    if text.split().count(obj) != 1 or text.count(obj) != 1 or others:
        raise ValueError(f"sentence must name {obj!r} once and no other object: {original!r}")


def write_story(rng: random.Random, album: dict, templates: list[str]) -> list[tuple[str, str]]:
    """(text, original_text) for each of the album's five photos."""
    male, female = rng.choice(MALE_NAMES), rng.choice(FEMALE_NAMES)
    main, other = (male, female) if rng.random() < .5 else (female, male)
    location, emotion = rng.choice(LOCATIONS), rng.choice(EMOTIONS)
    people = {male: "[male]", female: "[female]", location: "[location]"}
    sentences = []
    for template, obj in zip(templates, album["objects"]):
        at = rng.choice(EVENTS[album["event"]]).format(L=location)
        original = template.format(P=main, Q=other, L=location, c=OBJECTS[obj][0], o=obj,
                                   at=at, e=emotion)
        text = normalise(original, people)
        check_sentence(text, original, obj)
        sentences.append((text, original))
    return sentences


def pick_templates(rng: random.Random, avoid: set[str]) -> list[str]:
    """Five distinct templates, two with an emotion, none of `avoid` (the other worker's)."""
    plain = rng.sample([t for t in PLAIN_TEMPLATES if t not in avoid], 3)
    emotional = rng.sample([t for t in EMOTION_TEMPLATES if t not in avoid], 2)
    chosen = plain + emotional
    rng.shuffle(chosen)
    return chosen


def worker_id(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(14))


def make_albums(rng: random.Random) -> list[dict]:
    events = list(EVENTS)
    photo_ids = rng.sample(range(10**9, 10**10), N_ALBUMS * 5)
    albums = []
    for i in range(N_ALBUMS):
        albums.append({
            "id": str(72157600000000000 + rng.randint(0, 10**11)),
            "event": events[i % len(events)],  # the first N_VAL_ALBUMS cover every event
            "objects": rng.sample(list(OBJECTS), 5),
            "photo_ids": [str(p) for p in photo_ids[5 * i:5 * i + 5]],
            "date": f"201{rng.randint(2, 6)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        })
    return albums


def split_json(rng: random.Random, albums: list[dict], doubles: set[str], story_id: int,
               extensions: dict[str, str]) -> tuple[dict, int]:
    """The SIS JSON of one split; returns it and the next free story id."""
    annotations, images = [], []
    for album in albums:
        used: set[str] = set()
        for _ in range(2 if album["id"] in doubles else 1):
            templates = pick_templates(rng, used)
            used.update(templates)
            worker = worker_id(rng)
            for order, (pid, (text, original)) in enumerate(
                    zip(album["photo_ids"], write_story(rng, album, templates))):
                annotations.append([{
                    "original_text": original, "album_id": album["id"],
                    "photo_flickr_id": pid, "setting": "", "worker_id": worker,
                    "story_id": str(story_id), "tier": "story-in-sequence",
                    "worker_arranged_photo_order": order, "text": text,
                    "storylet_id": str(5 * story_id + order)}])
            story_id += 1
        for k, pid in enumerate(album["photo_ids"]):
            images.append({
                "id": pid, "album_id": album["id"], "title": f"DSC_{rng.randint(1, 9999):04d}",
                "url_o": f"https://farm{rng.randint(1, 9)}.staticflickr.com/"
                         f"{rng.randint(1000, 9999)}/{pid}_{rng.getrandbits(40):010x}_o"
                         f"{extensions[pid] or '.jpg'}",
                "datetaken": f"{album['date']} {10 + k}:{rng.randint(0, 59):02d}:"
                             f"{rng.randint(0, 59):02d}"})
    rng.shuffle(annotations)  # real files are not in story order: loaders must not rely on it
    info = {"description": "visiontales sample data: procedurally drawn albums in the VIST "
                           "story-in-sequence format", "version": "1.0", "year": 2024,
            "contributor": "visiontales", "date_created": "2024-06-01"}
    album_meta = [{"id": a["id"], "vist_label": a["event"],
                   "title": f"{a['event'].replace('_', ' ')} {a['date'][:4]}",
                   "description": ""} for a in albums]
    return {"info": info, "albums": album_meta, "type": "story_in_sequence",
            "annotations": annotations, "images": images}, story_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    out = parser.parse_args(argv).out
    rng = random.Random(SEED)
    albums = make_albums(rng)
    val, train = albums[:N_VAL_ALBUMS], albums[N_VAL_ALBUMS:]
    doubles = {a["id"] for a in rng.sample(train, N_DOUBLE_TRAIN) + rng.sample(val, N_DOUBLE_VAL)}

    photo_ids = [pid for album in albums for pid in album["photo_ids"]]
    shuffled = rng.sample(photo_ids, len(photo_ids))
    extensions = dict.fromkeys(photo_ids, ".jpg")
    for ext, count in EXTENSION_COUNTS.items():
        for pid in shuffled[:count]:
            extensions[pid] = ext
        shuffled = shuffled[count:]

    (out / "images").mkdir(parents=True, exist_ok=True)
    for album in albums:
        for pid, obj in zip(album["photo_ids"], album["objects"]):
            image, ext = draw_photo(album["event"], obj, rng), extensions[pid]
            path = out / "images" / f"{pid}{ext}"
            if ext == ".gif":
                image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path, "GIF")
            elif ext in (".png", ".bmp"):
                image.save(path, ext[1:].upper())
            else:
                image.save(path, "JPEG", quality=85)

    story_id = 45000
    for name, split_albums in (("train", train), ("val", val)):
        data, story_id = split_json(rng, split_albums, doubles, story_id, extensions)
        (out / f"{name}.story-in-sequence.json").write_text(json.dumps(data) + "\n",
                                                             encoding="utf-8")
    vocabulary = {"objects": list(OBJECTS), "events": list(EVENTS), "emotions": EMOTIONS,
                  "colors": {obj: color for obj, (color, _) in OBJECTS.items()}}
    (out / "vocabulary.json").write_text(json.dumps(vocabulary, indent=2) + "\n",
                                         encoding="utf-8")
    print(f"wrote {len(photo_ids)} images and {len(albums)} albums to {out}")


if __name__ == "__main__":
    main()
