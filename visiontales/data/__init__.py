"""Layer 1, data: VIST SIS files, your own stories (JSON lines/CSV), image files, VIST text,
the shipped sample data. Imports nothing of visiontales but :mod:`visiontales.utils`.

Modules: :mod:`~visiontales.data.dataset` (``StoryDataset``), :mod:`~visiontales.data.vist`
(``load_vist``), :mod:`~visiontales.data.stories` (``load_stories``),
:mod:`~visiontales.data.images`, :mod:`~visiontales.data.text`, :mod:`~visiontales.data.sample`.
"""
