"""Run by test_autoscaling.py against a local autoscaling cluster: annotate with an actor pool the head cannot
hold, record how many nodes the cluster had, then wait for the idle workers to be removed."""

import json
import sys
import threading
import time

import ray

from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config

address, model, input_uri, output_uri = sys.argv[1:5]
ray.init(address=address, log_to_driver=False)


def alive() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"])


peak = [alive()]
done = threading.Event()


def watch() -> None:
    while not done.wait(0.5):
        peak[0] = max(peak[0], alive())


threading.Thread(target=watch, daemon=True).start()
cfg = load_annotate_config(
    task="ner", model=model, input=input_uri, output=output_uri, min_actors=2, max_actors=2, batch_rows=16
)
manifest = run_annotation(cfg)
done.set()
deadline = time.time() + 120
while alive() > 1 and time.time() < deadline:
    time.sleep(1)
print("RESULT " + json.dumps({"peak_nodes": peak[0], "final_nodes": alive(), "run_id": manifest["run_id"]}))
