"""Plots of a training run, drawn from its history frame (``Trainer.history_frame()``)."""
from __future__ import annotations

import pandas as pd


def plot_history(frame: pd.DataFrame, ax=None):
    """Training loss by step, eval loss at each epoch end (and with the photos shuffled, when
    logged: the gap shows the model uses the photos), RL rewards (when logged) on a second
    axis; returns the figure.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"step": [1, 2], "epoch": [1, 1], "loss": [3.0, 2.0],
    ...                       "eval_loss": [float("nan"), 2.5]})
    >>> plot_history(frame).axes[0].get_ylabel()
    'cross-entropy per token'
    >>> frame["eval_loss_shuffled"] = [float("nan"), 3.1]
    >>> [t.get_text() for t in plot_history(frame).axes[0].get_legend().get_texts()]
    ['train loss', 'eval loss', 'eval loss, photos shuffled']
    """
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    ax.plot(frame["step"], frame["loss"], label="train loss")
    evals = frame.dropna(subset=["eval_loss"])
    if len(evals):
        ax.plot(evals["step"], evals["eval_loss"], "o-", label="eval loss")
    if "eval_loss_shuffled" in frame.columns and frame["eval_loss_shuffled"].notna().any():
        # the gap between the two eval curves is what the photos are worth to the model
        swapped = frame.dropna(subset=["eval_loss_shuffled"])
        ax.plot(swapped["step"], swapped["eval_loss_shuffled"], "s--", color="tab:gray",
                label="eval loss, photos shuffled")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy per token")
    ax.set_title("visiontales training")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    rewards = {"reward_sample": ("tab:green", "reward, sampled"),
               "reward_greedy": ("tab:red", "reward, greedy (baseline)")}
    shown = [name for name in rewards if name in frame.columns and frame[name].notna().any()]
    if shown:  # the RL step: what the reward did, on its own scale
        twin = ax.twinx()
        for name in shown:
            rows = frame.dropna(subset=[name])
            color, label = rewards[name]
            twin.plot(rows["step"], rows[name], color=color, alpha=0.7, label=label)
        twin.set_ylabel("reward")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels)
    fig.tight_layout()
    return fig
