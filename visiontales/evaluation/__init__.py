"""Layer 3, evaluation: metrics, the published protocols, METEOR, CLIPScore, the object check,
prediction files, the rubric judge, human rating sheets and the HTML report. Imports from
:mod:`visiontales.model` and below only; needs the ``eval`` extra for most metrics.
"""
