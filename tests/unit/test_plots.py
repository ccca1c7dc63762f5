"""training.png beside metrics.json, and a run that cannot draw it still ends well (the plot is only a view)."""

import json
import subprocess
import sys

METRICS = {
    "task": "ner",
    "run_name": "r1",
    "history": [
        {"epoch": 1, "step": 10, "train_loss": 1.2, "loss_curve": [[5, 1.5], [10, 1.1]], "eval": {"overall_f1": 0.5}},
        {"epoch": 2, "step": 20, "train_loss": 0.7, "loss_curve": [[15, 0.8], [20, 0.6]], "eval": {"overall_f1": 0.7}},
    ],
}
SCRIPT = """
import json, sys
from pathlib import Path
if sys.argv[2] == "without":
    sys.modules["matplotlib"] = None  # as on a node where matplotlib is not installed
from nlpbatch.plots import save_training_plot
print(json.dumps(str(save_training_plot(json.loads(sys.argv[3]), Path(sys.argv[1])))))
"""


def _plot(tmp_path, matplotlib: str):
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), matplotlib, json.dumps(METRICS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout), run.stderr


def test_training_plot_is_drawn(tmp_path):
    path, _ = _plot(tmp_path, "with")
    assert path == str(tmp_path / "training.png")
    assert (tmp_path / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_node_without_matplotlib_still_finishes_the_run_and_says_where_the_scores_are(tmp_path):
    path, err = _plot(tmp_path, "without")
    assert path == "None" and not (tmp_path / "training.png").exists()
    assert "training.png not drawn (ModuleNotFoundError" in err and str(tmp_path / "metrics.json") in err
