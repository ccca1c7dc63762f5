"""Training curves as a PNG beside metrics.json: the running loss per logged step and the validation score per
epoch, so a run can be judged at a glance (and two runs compared side by side)."""

from __future__ import annotations

from pathlib import Path


def plot_training(metrics: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    history = metrics.get("history") or []
    from nlpbatch.tasks import get_task

    task = metrics["task"]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    curve = [point for h in history for point in h.get("loss_curve") or []]
    if curve:
        loss_ax.plot([s for s, _ in curve], [v for _, v in curve], color="#4c72b0", label="running loss")
    epochs = [h["epoch"] for h in history]
    steps = [h.get("step") for h in history]
    loss_ax.plot(steps, [h["train_loss"] for h in history], "o", color="#dd8452", label="epoch mean")
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    loss_ax.legend()
    for label, values, marker in get_task(task).plot_scores(history):
        score_ax.plot(epochs, values, marker, label=label)
    score_ax.set(xlabel="epoch", ylabel="validation score", title=f"validation ({task})", xticks=epochs)
    score_ax.grid(alpha=0.3)
    score_ax.legend()
    fig.suptitle(f"nlpbatch train {task}: {metrics.get('run_name', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_training_plot(metrics: dict, output: Path) -> Path | None:
    """OUTPUT/training.png, or None with a line saying why not: the plot is a view of metrics.json, and a trained
    model is never reported as a failed run over it (a node without matplotlib, a broken font cache)."""
    from nlpbatch.progress import say

    try:
        return plot_training(metrics, output / "training.png")
    except (ImportError, OSError, RuntimeError) as err:
        say(f"training.png not drawn ({type(err).__name__}: {err}); the scores are in {output / 'metrics.json'}")
        return None
