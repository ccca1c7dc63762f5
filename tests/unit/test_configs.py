"""Every shipped YAML config loads; bad keys and values are all reported at once, naming the key."""

from pathlib import Path

import pytest
import yaml

from nlpbatch.config import ConfigError, load_train_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "jobs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_job_configs_load(path):
    from nlpbatch.config import load_annotate_config

    loader = load_annotate_config if path.name.startswith("annotate") else load_train_config
    assert loader(path).task in ("ner", "qa")


def test_all_errors_reported_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: ner\noutput: x\nepocs: 3\nlearning_rate: fast\nbatch_size: 0\nsubtoken_labels: last\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    message = str(err.value)
    assert "epocs: unknown key (" in message and "did you mean 'epochs'?" in message
    assert f"learning_rate: expected a number, got 'fast' ({path}:4)" in message
    assert "batch_size: must be >= 1, got 0" in message
    assert "subtoken_labels: 'last' is not 'all' or 'first'" in message


def test_command_line_values_are_blamed_on_the_command_line(tmp_path):
    from nlpbatch.config import config_from_argv

    path = tmp_path / "c.yaml"
    path.write_text("task: ner\noutput: x\n")
    with pytest.raises(ConfigError) as err:
        config_from_argv(load_train_config, [str(path), "epochs=two"])
    assert "epochs: expected an integer, got 'two' (command line)" in str(err.value)
    assert str(path) not in str(err.value) and "NoneType" not in str(err.value)


def test_cli_overrides_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: ner\noutput: x\nepochs: 3\n")
    assert load_train_config(path, epochs=1).epochs == 1
    with pytest.raises(ConfigError, match="batch_size: must be >= 1"):
        load_train_config(path, batch_size=0)


def test_cluster_yaml_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(raw))
    for name, node in raw["available_node_types"].items():
        assert node.get("min_workers", 0) <= node.get("max_workers", 0) or name == raw["head_node_type"]


def test_windows_are_the_documented_ones():
    qa, ner = load_train_config(task="qa", output="x"), load_train_config(task="ner", output="x")
    assert (qa.max_length, ner.max_length) == (384, 512)  # stored, not None: JSON and checkpoints say it
    assert load_train_config(task="ner", output="x", max_length=128).max_length == 128  # no QA stride check for NER
    with pytest.raises(ConfigError, match="doc_stride: 200 must be in"):
        load_train_config(task="qa", output="x", max_length=384, doc_stride=200)


def test_evaluate_uses_the_windows_the_model_was_trained_with(tmp_path):
    import json

    from nlpbatch.evaluation import eval_config

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "nlpbatch.json").write_text(json.dumps({"task": "qa", "max_length": 256, "doc_stride": 64}))
    cfg = eval_config("qa", str(tmp_path))
    assert (cfg.max_length, cfg.doc_stride) == (256, 64)
    assert eval_config("qa", str(tmp_path), max_length=128, doc_stride=32).max_length == 128
    with pytest.raises(ConfigError, match="is a qa model: use `nlpbatch evaluate qa`"):
        eval_config("ner", str(tmp_path))


def test_help_documents_every_option():
    """Generated from the config dataclasses, so it cannot drift: every option has help, no internal object leaks
    into it, required options say so, and abbreviated flags are refused."""
    import argparse
    import contextlib
    import io

    from nlpbatch.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and action.help.strip(), f"{name} {action.option_strings[0]} has no help"
        text = command.format_help()
        assert "<" not in text and "object at" not in text, text
    train = io.StringIO()
    with contextlib.redirect_stdout(train), pytest.raises(SystemExit):
        parser.parse_args(["train", "ner", "--help"])
    assert "(required, here or in --config)" in " ".join(train.getvalue().split())
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser.parse_args(["train", "ner", "--epoch", "1"])  # no silent abbreviation of --epochs


def test_config_task_must_match_the_command(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: qa\noutput: x\n")
    with pytest.raises(ConfigError, match=r"task: .*c.yaml:1 says 'qa' but the command says 'ner'"):
        load_train_config(path, task="ner")


def test_local_looking_model_paths_never_go_to_the_hub(tmp_path, monkeypatch):
    from nlpbatch.models import resolve_model

    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    for typo in ("runs/nre", "./model", "/no/such/dir", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            resolve_model(typo)
    assert resolve_model("dslim/bert-base-NER") == "dslim/bert-base-NER"  # a hub id stays one


def test_errors_point_at_the_fix(monkeypatch, capsys):
    from nlpbatch.cli import main
    from nlpbatch.config import ConfigError, load_annotate_config
    from nlpbatch.data import DataError
    from nlpbatch.data.conll import load_conll_hub

    with pytest.raises(SystemExit) as exit_:
        main(["train", "ner", "--output", "x", "--epoch", "1"])  # abbreviations refused, the right flag suggested
    assert exit_.value.code == 2 and "did you mean --epochs?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # a prefix of its words: the flags it begins, not --max-steps
        main(["train", "ner", "--output", "x", "--max-ex", "5"])
    said = capsys.readouterr().err
    assert "did you mean --max-eval-examples or --max-train-examples?" in said and len(said.splitlines()) == 2
    with pytest.raises(SystemExit) as exit_:  # a misspelt task: two lines, not the 40 of the usage
        main(["train", "nerr", "--output", "x"])
    said = capsys.readouterr().err
    assert "'nerr' is not one of ner, qa, classify" in said and "did you mean ner?" in said
    assert len(said.splitlines()) == 2 and "usage:" not in said
    with pytest.raises(ConfigError, match=r"output: required \(--output DIR: where the model"):
        from nlpbatch.config import load_train_config

        load_train_config(task="ner")
    with pytest.raises(ConfigError, match=r"max_actors: must be >= 1 and >= min_actors \(1\), got 0"):
        load_annotate_config(task="ner", model="m", input="i", output="o", max_actors=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub unreachable: say how to use local files
    with pytest.raises(DataError, match=r"Offline\? Pass --data-dir DIR"):
        load_conll_hub("conll2003", "validation")


def test_rows_per_inference_call_fill_the_pool_then_grow():
    """Large jobs get large calls (the per-call cost stops mattering); small jobs still give every actor work."""
    from nlpbatch.config import load_annotate_config

    cfg = load_annotate_config(task="ner", model="m", input="in", output="out")
    assert cfg.rows_per_batch(100_000, 2) == 256
    assert cfg.rows_per_batch(1_000, 2) == 62  # 8 calls for each of the 2 actors
    assert cfg.rows_per_batch(7, 2) == 16
    fixed = load_annotate_config(task="ner", model="m", input="in", output="out", batch_rows=5)
    assert fixed.rows_per_batch(10**6, 2) == 5
    with pytest.raises(ConfigError, match="batch_rows: must be >= 1"):
        load_annotate_config(task="ner", model="m", input="in", output="out", batch_rows=0)
    gpu = load_annotate_config(task="ner", model="m", input="in", output="out", num_gpus=1)
    assert gpu.rows_per_batch(10**6, 1) == 2048 and gpu.tokens_per_batch == 65536  # GPU calls fill big passes
    assert cfg.tokens_per_batch == 512


def test_small_inputs_run_here_unless_a_cluster_is_asked_for(monkeypatch):
    """`runner: auto` leaves Ray out where it would only add a cluster of this machine: no cluster named, CPU, a
    machine of up to LOCAL_CORES cores or a small input (the no-cluster case itself: test_in_process.py's
    subprocess run)."""
    from nlpbatch.config import LOCAL_CORES, LOCAL_ROWS, load_annotate_config

    def cfg(**settings):
        return load_annotate_config(task="ner", model="m", input="in", output="out", **settings)

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not cfg().local(LOCAL_ROWS + 1, cores=LOCAL_CORES + 1)  # a large input on a large machine: Ray
    assert not cfg(num_gpus=1).local(6)  # GPUs are the cluster's
    assert cfg(runner="local").local(10**6) and not cfg(runner="ray").local(6)  # asked for: as asked
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert not cfg().local(6)  # a cluster named (`ray job submit`): it runs there
    with pytest.raises(ConfigError, match="runner: 'laptop' is not auto, ray or local"):
        cfg(runner="laptop")
    with pytest.raises(ConfigError, match="runner: local runs on this process's CPUs"):
        cfg(runner="local", num_gpus=1)


def test_packing_settings_are_checked():
    from nlpbatch.config import load_annotate_config

    with pytest.raises(
        ConfigError, match="packing: 'on' runs the torch engine; with backend 'onnx-int8' use packing off"
    ):
        load_annotate_config(task="ner", model="m", input="in", output="out", packing="on", backend="onnx-int8")
    with pytest.raises(ConfigError, match="packing: 'yes' is not auto, on or off"):
        load_annotate_config(task="ner", model="m", input="in", output="out", packing="yes")


def test_ray_workers_get_a_local_model_as_an_absolute_path(tmp_path, monkeypatch):
    from nlpbatch.models import worker_model

    (tmp_path / "runs" / "ner").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert worker_model("runs/ner") == str(tmp_path / "runs" / "ner")  # workers run in another directory
    assert worker_model(None) is None and worker_model("bundled:all-MiniLM-L6-v2") == "bundled:all-MiniLM-L6-v2"
    assert worker_model("dslim/bert-base-NER") == "dslim/bert-base-NER"  # a hub id: each worker fetches it


def test_token_budget_must_hold_one_longest_example_per_worker():
    with pytest.raises(ConfigError) as err:
        load_train_config(task="ner", output="o", batch_tokens=600, num_workers=2, group_by_length=False)
    assert "batch_tokens: 600 must hold one longest example per worker (>= max_length 512 x 2 workers)" in str(
        err.value
    )
    assert "drop --no-group-by-length" in str(err.value)
    assert load_train_config(task="ner", output="o", batch_tokens=4096).batch_tokens == 4096


def test_dates_that_do_not_exist_are_named_as_such():
    from nlpbatch.nightly import select_dates

    with pytest.raises(ConfigError, match=r"--date 2026-11-31: no such date \(day is out of range for month\)"):
        select_dates(["2026-11-30"], "2026-11-31", None)
    with pytest.raises(ConfigError, match="--since '30.11.2026': not a date in the form YYYY-MM-DD"):
        select_dates(["2026-11-30"], None, "30.11.2026")


def test_the_task_may_come_from_the_yaml_file(tmp_path):
    from nlpbatch.cli import build_parser

    path = tmp_path / "c.yaml"
    path.write_text("task: qa\noutput: x\n")
    args = build_parser().parse_args(["train", "--config", str(path)])
    assert args.task is None and load_train_config(args.config, task=args.task).task == "qa"
    with pytest.raises(ConfigError, match="task: required \\(the task argument, or task: in --config\\)"):
        load_train_config(None, output="x")
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["annotate"].format_help().split())
    assert "the task: ner, qa, classify, or the module of a task of your own" in help_text


def test_stride_and_doc_stride_name_one_setting_everywhere():
    from nlpbatch.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["train", "qa", "--output", "x", "--stride", "64"]).doc_stride == 64
    assert parse(["annotate", "qa", "--model", "m", "--doc-stride", "64"]).stride == 64
    assert parse(["evaluate", "qa", "--model", "m", "--stride", "64"]).doc_stride == 64


def test_the_shipped_crontab_submits_what_the_readme_submits():
    import json
    import re
    import shlex

    readme = (REPO / "README.md").read_text()
    documented = json.loads(re.search(r"RT='(.*)'", readme).group(1))["excludes"]
    line = next(ln for ln in (REPO / "jobs/schedule/crontab").read_text().splitlines() if not ln.startswith("#"))
    words = shlex.split(line)
    runtime_env = json.loads(words[words.index("--runtime-env-json") + 1])
    assert runtime_env["excludes"] == documented  # no venv or run folder uploaded with every night's job


@pytest.mark.parametrize(
    ("argv", "listed", "not_listed"),
    [
        (
            ["train", "ner", "--help"],
            ["--tag-scheme", "--tokens-column", "--epochs"],
            ["--text-pair-column", "--n-best"],
        ),
        (["train", "classify", "--help"], ["--multi-label", "--text-pair-column"], ["--tag-scheme", "--n-best"]),
        (["annotate", "qa", "--help"], ["--question-column", "--null-threshold"], ["--aggregation", "--window-reduce"]),
        (["train", "--help"], ["--tag-scheme", "--multi-label", "--n-best"], []),
    ],
)
def test_a_task_help_lists_that_task_flags(capsys, argv, listed, not_listed):
    from nlpbatch.cli import main

    with pytest.raises(SystemExit):
        main(argv)
    out = capsys.readouterr().out
    assert all(flag in out for flag in listed) and not any(flag in out for flag in not_listed)


def test_a_task_recipe_sets_defaults_that_flags_and_yaml_override(tmp_path, monkeypatch):
    import dataclasses

    from nlpbatch.config import load_train_config
    from nlpbatch.tasks import classify

    own = dataclasses.replace(classify.TASK, recipe={"learning_rate": 5e-5, "epochs": 3})
    monkeypatch.setattr(classify, "TASK", own)
    cfg = load_train_config(task="classify", output="x")
    assert (cfg.learning_rate, cfg.epochs) == (5e-5, 3)
    assert load_train_config(task="classify", output="x", learning_rate=1e-4).learning_rate == 1e-4
    (tmp_path / "c.yaml").write_text("task: classify\noutput: x\nepochs: 7\n")
    assert load_train_config(tmp_path / "c.yaml").epochs == 7
    assert load_train_config(task="ner", output="x").learning_rate == 2e-4  # another task keeps the general default


def test_classify_recipe_batches_at_random_unless_token_budgets_are_asked_for():
    from nlpbatch.config import load_train_config

    cfg = load_train_config(task="classify", output="x")
    assert (cfg.batch_size, cfg.warmup_ratio, cfg.group_by_length) == (8, 0.0, False)
    budget = load_train_config(task="classify", output="x", batch_tokens=4096)  # valid: grouping stays on
    assert budget.group_by_length and budget.batch_tokens == 4096


def test_a_short_run_without_a_batch_size_trains_at_8():
    """Under 1,000 optimizer steps at 16 (1,000 WNUT-17 sentences, 5 epochs: 313), the default batch is 8; a given
    batch size, the classify recipe's and longer runs keep theirs."""
    from nlpbatch.config import load_train_config, short_run_batch_size

    assert load_train_config(task="ner", output="x").batch_size is None  # decided once the data is read
    assert short_run_batch_size(1000, 5) == 8 and short_run_batch_size(3394, 5) == 16
    assert short_run_batch_size(3200, 5) == 16 and short_run_batch_size(3199, 5) == 8  # 1,000 steps exactly
    assert short_run_batch_size(100, 1, num_workers=12) == 12  # never under one example per worker
    assert load_train_config(task="ner", output="x", batch_size=32).batch_size == 32
    assert load_train_config(task="classify", output="x").batch_size == 8
