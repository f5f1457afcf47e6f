"""Layer 3, evaluation: metrics, the published protocols, METEOR, CLIPScore, the object check,
prediction files, the chat-endpoint client, the rubric judge, storytellers behind an endpoint
(vision models to compare with), human rating sheets, agreement, the comparison table and the
HTML report. Imports from :mod:`visiontales.model` and below only; needs the ``eval`` extra
for most metrics and for the agreement statistics.
"""
