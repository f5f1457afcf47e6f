"""Layer 4, training: ``Trainer``, ``TrainingConfig``, callbacks, checkpoints and
``TrainState``, batching, distributed helpers, loggers, plots, the photo check and the record
of a run. Imports from :mod:`visiontales.evaluation` and below only (metrics lazily, when
``TrainingConfig.eval_metrics`` asks for them).
"""
