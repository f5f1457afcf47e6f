"""Layer 5, recipes: the instruction tasks and the RL step (Lin & Chen's recipe) and the tiny
offline recipe. The tiny recipe's sizes and settings are data in ``recipes/tiny/`` (JSON, as
open_clip's model configs are), read by ``StoryModel.tiny`` and ``TrainingConfig.tiny``
without importing this package.
"""
