"""Run by test_node_loss.py in its own process (a multi-node Cluster cannot share the test session's Ray).

    python node_loss_job.py annotate|train WORKDIR MODEL DATA_DIR

Starts a head and two worker nodes as separate raylets, runs the job, removes the worker node that hosts an
inference actor (annotate) or a Train worker (train) part way through, and prints a JSON summary on the last line.
"""

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster


def node_hosting(class_name: str) -> str | None:
    for actor in ray._private.state.actors().values():  # GCS actor table: no dashboard needed
        if class_name in actor.get("ActorClassName", "") and actor.get("State") == "ALIVE":
            return actor["Address"]["NodeID"]
    return None


def remove_when(cluster, nodes, ready, class_name, log):
    """Wait for `ready()`, then hard-kill the worker node that hosts `class_name`."""
    deadline = time.time() + 300
    while time.time() < deadline and not ready():
        time.sleep(0.1)
    node_id = node_hosting(class_name)
    victim = next((n for n in nodes if n.node_id == node_id), nodes[-1])
    cluster.remove_node(victim, allow_graceful=False)
    log.update(
        removed_node=victim.node_id, hosted=class_name if victim.node_id == node_id else None, removed_at=time.time()
    )


def annotate(workdir: Path, model: str, data_dir: str) -> dict:
    from nlpbatch.annotate.pipeline import run_annotation
    from nlpbatch.config import load_annotate_config
    from nlpbatch.corpus import write_corpus

    write_corpus(data_dir, 400, str(workdir / "corpus"), files=8)
    cfg = load_annotate_config(
        task="ner",
        model=model,
        input=str(workdir / "corpus"),
        output=str(workdir / "out"),
        min_actors=1,
        max_actors=1,  # 2 would take both CPUs of the surviving node and starve the read/write tasks (a stall)
        batch_tokens=4096,
    )
    log: dict = {}
    seen: list[float] = []

    def mid_inference() -> bool:  # an inference actor has been working for a while
        if not seen and node_hosting("Annotator"):
            seen.append(time.time())
        return bool(seen) and time.time() - seen[0] > 8

    return _run_with_loss(lambda: run_annotation(cfg), mid_inference, "Annotator", log)


def train(workdir: Path, model: str, data_dir: str) -> dict:
    from nlpbatch.config import load_train_config
    from nlpbatch.train.trainer import run_training

    common = dict(
        task="ner",
        data_dir=data_dir,
        model=model,
        epochs=3,
        num_workers=2,
        max_failures=1,
        max_train_examples=1500,
        max_eval_examples=200,
        batch_size=16,
    )
    reference = run_training(load_train_config(output=str(workdir / "ref"), **common))
    runs = workdir / "lossy" / "ray_runs"
    log: dict = {"reference_f1": reference["final"]["eval"]["overall_f1"]}
    result = _run_with_loss(
        lambda: run_training(load_train_config(output=str(workdir / "lossy"), **common)),
        lambda: bool(list(runs.glob("*/checkpoint_manager_snapshot.json"))),
        "RayTrainWorker",
        log,
    )
    result["f1"] = result.pop("result")["final"]["eval"]["overall_f1"]
    return result


CLUSTER: dict = {}


def _run_with_loss(job, ready, class_name, log) -> dict:
    cluster, nodes = CLUSTER["cluster"], CLUSTER["nodes"]
    killer = threading.Thread(target=remove_when, args=(cluster, nodes, ready, class_name, log), daemon=True)
    killer.start()
    result = job()
    killer.join(timeout=5)
    log["finished_at"] = time.time()
    return {**log, "result": result, "alive_nodes": sum(n["Alive"] for n in ray.nodes())}


def main() -> None:
    mode, workdir, model, data_dir = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=2, object_store_memory=200 * 2**20) for _ in range(2)]
    ray.init(address=cluster.address)
    CLUSTER.update(cluster=cluster, nodes=nodes)
    summary = annotate(workdir, model, data_dir) if mode == "annotate" else train(workdir, model, data_dir)
    if mode == "annotate":
        summary["manifest"] = summary.pop("result")
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
