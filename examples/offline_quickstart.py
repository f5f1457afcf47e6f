"""The whole pipeline offline in about a minute on 2 CPU cores: sample data, tiny model, train, tell.

    python examples/offline_quickstart.py
"""
import visiontales as vt

train, val = vt.sample_dataset("train"), vt.sample_dataset("val")
model = vt.StoryModel.tiny(vocab_from=train, prefix="sequence")
config = vt.TrainingConfig.tiny(output_dir="runs/offline-quickstart", num_samples=1)  # the tiny recipe
history = vt.Trainer(model, train, val, config).train()
print(history.tail())
row = val[0]
print("generated:", model.generate([list(row["image_paths"])])[0])
print("reference:", row["text"])
