"""visiontales: turn a sequence of photos into a short story.

Frozen CLIP image features become a GPT-2 prefix (the VisionTales paper), trained on
VIST stories. Quickstart, offline::

    import visiontales as vt
    train = vt.sample_dataset("train")
    model = vt.StoryModel.tiny(vocab_from=train)
    history = vt.Trainer(model, train, config=vt.TrainingConfig(lr=1e-3, batch_size=8)).train()
    print(model.generate([list(train[0]["image_paths"])])[0])
"""
from .data import StoryDataset, load_vist, sample_dataset
from .instructions import (INSTRUCTIONS, TASKS, InstructionDataset, build_instruction_dataset,
                           instruction_prompt)
from .loading import WeightsUnavailableError
from .model import StoryModel, StoryModelConfig
from .rl import CiderReward, GroundingReward, JudgeReward, SelfCritical, WeightedReward
from .train import Trainer, TrainingConfig

__version__ = "0.1.0"

__all__ = [
    "StoryDataset", "load_vist", "sample_dataset",
    "StoryModel", "StoryModelConfig", "WeightsUnavailableError",
    "Trainer", "TrainingConfig",
    "INSTRUCTIONS", "TASKS", "InstructionDataset", "build_instruction_dataset", "instruction_prompt",
    "SelfCritical", "CiderReward", "GroundingReward", "JudgeReward", "WeightedReward",
    "__version__",
]
