"""Layer 2, model: the backbones (open_clip, transformers), image features and their cache,
numeric precision, the prefix mapper, tokens, ``StoryModel``, save/load and the Hub.
Imports from :mod:`visiontales.data` and below only.

Modules: :mod:`~visiontales.model.backbones`, :mod:`~visiontales.model.features`,
:mod:`~visiontales.model.precision`, :mod:`~visiontales.model.prefix`,
:mod:`~visiontales.model.tokens`, :mod:`~visiontales.model.story_model`,
:mod:`~visiontales.model.saving`, :mod:`~visiontales.model.hub`.
"""
