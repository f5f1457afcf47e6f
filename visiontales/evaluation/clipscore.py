"""CLIPScore (Hessel et al. 2021): how well a story matches its own photos, by CLIP.

Kept apart from the n-gram metrics on purpose: :func:`model_grounding` (which the demo page
and the RL :class:`~visiontales.recipes.rl.GroundingReward` call) needs no extra.
"""
from __future__ import annotations

from typing import Sequence

import torch

from visiontales.data.images import ImageLike, load_rgb

CLIPSCORE_WEIGHT = 2.5  # Hessel et al. 2021 rescale cosines, which rarely pass 0.4, to ~[0, 1]


@torch.no_grad()
def grounding_score(
    stories: Sequence[str],
    image_sequences: Sequence[Sequence[ImageLike]],
    clip_model: torch.nn.Module,
    preprocess,
    tokenizer,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> list[float]:
    """CLIPScore (Hessel et al. 2021) of each story against its own images, in [0, 2.5].

    Per story: ``2.5 * max(cos(image, story), 0)`` averaged over the story's images, with
    both embeddings L2-normalised. The text side is the whole story, not one sentence per
    image, since a generated story need not have one sentence per photo; the tokenizer
    cuts it to CLIP's context (77 tokens, about 55 words). ``device=None`` uses the
    model's own device. Works with any open_clip model, its preprocess and
    ``open_clip.get_tokenizer(name)``.

    With OpenAI's CLIP (the scores mean something only with trained weights)::

        model, _, preprocess = open_clip.create_model_and_transforms(
            "ViT-B-32-quickgelu", pretrained="openai")
        grounding_score(["a dog ran ."], [["dog.jpg"]], model, preprocess,
                        open_clip.get_tokenizer("ViT-B-32-quickgelu"))
    """
    if len(stories) != len(image_sequences):
        raise ValueError(f"{len(stories)} stories but {len(image_sequences)} image sequences")
    if any(len(seq) == 0 for seq in image_sequences):
        raise ValueError("every story needs at least one image")
    device = torch.device(device) if device is not None else next(clip_model.parameters()).device
    was_training = clip_model.training
    clip_model.eval()
    try:
        flat = [image for seq in image_sequences for image in seq]
        image_emb = torch.cat([
            clip_model.encode_image(torch.stack(
                [preprocess(load_rgb(im)) for im in flat[i:i + batch_size]]).to(device)).float()
            for i in range(0, len(flat), batch_size)])
        text_emb = torch.cat([
            clip_model.encode_text(tokenizer(list(stories[i:i + batch_size])).to(device)).float()
            for i in range(0, len(stories), batch_size)])
    finally:
        clip_model.train(was_training)
    image_emb = torch.nn.functional.normalize(image_emb, dim=-1)
    text_emb = torch.nn.functional.normalize(text_emb, dim=-1)
    story_of_image = torch.repeat_interleave(
        torch.arange(len(stories)), torch.tensor([len(seq) for seq in image_sequences]))
    cos = (image_emb * text_emb[story_of_image.to(device)]).sum(-1).cpu()  # (num images,)
    clipped = CLIPSCORE_WEIGHT * cos.clamp(min=0)
    return [float(clipped[story_of_image == i].mean()) for i in range(len(stories))]


def model_grounding(model, stories: Sequence[str],
                    image_sequences: Sequence[Sequence[ImageLike]]) -> list[float]:
    """:func:`grounding_score` with a :class:`~visiontales.model.story_model.StoryModel`'s own CLIP.

    >>> import visiontales as vt
    >>> val = vt.sample_dataset("val")
    >>> scores = model_grounding(vt.StoryModel.tiny(vocab_from=val), ["a red car ."], [val[0]["image_paths"]])
    >>> 0 <= scores[0] <= CLIPSCORE_WEIGHT
    True
    """
    import open_clip
    return grounding_score(stories, image_sequences, model.clip, model.preprocess,
                           open_clip.get_tokenizer(model.config.clip))
