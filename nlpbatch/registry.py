"""A model registry on plain storage (a local folder or an `s3://` prefix; no server), so the nightly loop knows
which model is in production and follows it when it changes:

    REGISTRY/CURRENT.json                    the pointer: {"version": 3, "model_sha256", "promoted_at", "gate", ...}
    REGISTRY/versions/v0003/                 a full model dir, copied in and never changed after
    REGISTRY/versions/v0003/_REGISTERED.json written last: a copy without it never finished and is not a version
    REGISTRY/versions/v0003.claim.json       the claim of the number (an absent-only write: one claimant wins)

The pointer moves by the conditional write the publish protocol uses (`commit.Store.put_if`: S3 `If-Match`, a
flock-guarded compare-and-rename locally), so two promotions cannot interleave: the second is refused and told.
`--model REGISTRY` (the current version) or `--model REGISTRY@3` resolves to a local copy of that version (an S3
registry is copied once into the user's cache; versions never change), and each run resolves it once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import uuid
from pathlib import Path

from nlpbatch.storage import StorageError, filesystem_for, join, read_json, user_cache, with_retries

POINTER = "CURRENT.json"
REGISTERED = "_REGISTERED.json"
VERSION_DIR = re.compile(r"^v(\d{4,})$")
SKIPPED = ("checkpoints",)  # a run dir's resumable checkpoints are not part of the model
HISTORY = 50  # promotions the pointer remembers


class RegistryError(StorageError):
    """A registry that cannot be read or moved as asked: one line saying why and what to do."""


class PromotionConflict(RegistryError):
    """Another promotion moved the pointer after this one read it: nothing was changed by this one."""


def version_name(number: int) -> str:
    return f"v{number:04d}"


def split_ref(model: str) -> tuple[str, int | None]:
    """("REGISTRY", 3) for "REGISTRY@3" or "REGISTRY@v3"; ("REGISTRY", None) for the current version."""
    found = re.fullmatch(r"(.+)@v?(\d+)", model)
    return (found.group(1), int(found.group(2))) if found else (model, None)


def is_registry(model: str) -> bool:
    """A --model value naming a registry: a folder (or s3:// prefix) holding CURRENT.json or versions/."""
    root, _ = split_ref(model)
    if root.startswith("s3://"):
        return True  # a model dir cannot be read from S3 directly: only a registry can be there
    path = Path(root).expanduser()
    return path.is_dir() and ((path / POINTER).is_file() or (path / "versions").is_dir())


class Registry:
    def __init__(self, uri: str, s3_endpoint: str | None = None):
        from nlpbatch.annotate.commit import Store

        self.uri = uri.rstrip("/")
        self.s3_endpoint = s3_endpoint
        self.filesystem, self.root = filesystem_for(self.uri, s3_endpoint)
        self.store = Store(self.filesystem, self.root, s3_endpoint)

    # --- reading
    def pointer(self):
        """The stored pointer (`Stored`: body None when nothing was promoted yet)."""
        return self.store.get(POINTER)

    def versions(self) -> dict[int, dict]:
        """{number: its _REGISTERED.json} of every complete version, oldest first."""
        from pyarrow import fs

        selector = fs.FileSelector(join(self.root, "versions"), allow_not_found=True)
        infos = with_retries(lambda: self.filesystem.get_file_info(selector), f"list {self.uri}/versions")
        found = {}
        for info in infos:
            match = VERSION_DIR.match(info.base_name)
            if info.type == fs.FileType.Directory and match:
                record = read_json(self.filesystem, join(info.path, REGISTERED))
                if record is not None:
                    found[int(match.group(1))] = record
        return dict(sorted(found.items()))

    def current(self) -> int | None:
        body = self.pointer().body
        return int(body["version"]) if body else None

    def resolve(self, version: int | None = None) -> str:
        """The local model dir of `version` (None: the current one), copied into the user's cache from S3."""
        number = self.current() if version is None else version
        if number is None:
            s3 = " (an s3:// --model names a model registry: copy a model dir to local disk to use it as it is)"
            raise RegistryError(
                f"{self.uri}: no version is promoted yet; run `nlpbatch promote --registry {self.uri} --model RUN_DIR`"
                + (s3 if self.uri.startswith("s3://") and not self.versions() else "")
            )
        record = read_json(self.filesystem, join(self.root, "versions", version_name(number), REGISTERED))
        if record is None:
            known = ", ".join(version_name(n) for n in self.versions()) or "none"
            raise RegistryError(f"{self.uri}: no version {number} (versions: {known})")
        source = join(self.root, "versions", version_name(number))
        return self._cached(source, number) if self.uri.startswith("s3://") else source

    def _cached(self, source: str, number: int) -> str:
        from pyarrow import fs

        target = user_cache("registry", hashlib.sha256(self.uri.encode()).hexdigest()[:16], version_name(number))
        if (target / REGISTERED).is_file():  # versions never change: a complete copy is reused
            return str(target)
        partial = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.partial")
        selector = fs.FileSelector(source, recursive=True)
        infos = with_retries(lambda: self.filesystem.get_file_info(selector), f"list {source}")
        for info in (i for i in infos if i.type == fs.FileType.File):
            local = partial / info.path[len(source) :].lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            with_retries(
                lambda i=info, d=local: fs.copy_files(i.path, str(d), self.filesystem, fs.LocalFileSystem()),
                f"copy {info.path}",
            )
        try:
            os.replace(partial, target)
        except OSError:  # another process finished the same copy first
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
        return str(target)

    # --- writing
    def register(self, model_dir: str) -> int:
        """Copy a local model dir in as the next version (its weights, tokenizer, card, metrics and exported engine
        files; not its checkpoints); returns its number. The record goes last, so a killed copy is no version."""
        from pyarrow import fs

        from nlpbatch.models import model_fingerprint
        from nlpbatch.tasks import task_of_model

        source = Path(model_dir)
        files = [
            p
            for p in sorted(source.rglob("*"))
            if p.is_file() and not any(part in SKIPPED or part.startswith(".") for part in p.relative_to(source).parts)
        ]
        if not self.uri.startswith("s3://"):  # the first write makes the folder: reading never creates one
            Path(self.root, "versions").mkdir(parents=True, exist_ok=True)
        number = max(self._claimed(), default=0) + 1  # every version was claimed first
        while (
            self.store.put_if(f"versions/{version_name(number)}.claim.json", {"nonce": uuid.uuid4().hex}, None) is None
        ):
            number += 1  # another registration took it
        target = join(self.root, "versions", version_name(number))
        local = fs.LocalFileSystem()
        for path in files:
            dest = join(target, path.relative_to(source).as_posix())
            if not self.uri.startswith("s3://"):
                Path(dest).parent.mkdir(parents=True, exist_ok=True)
            with_retries(lambda p=path, d=dest: fs.copy_files(str(p), d, local, self.filesystem), f"copy {path}")
        metrics = _read_json_file(source / "metrics.json")
        record = {
            "version": number,
            "registry": self.uri,
            "registered_at": _now(),
            "source": str(source.resolve()),
            "task": task_of_model(str(source)),
            "model_sha256": model_fingerprint(str(source)),
            "files": len(files),
            "training_data": _training_data(metrics.get("config", {})),
            "validation": (metrics.get("final") or {}).get("eval"),
        }
        from nlpbatch.storage import write_json

        write_json(self.filesystem, join(target, REGISTERED), record)
        return number

    def _claimed(self) -> list[int]:
        from pyarrow import fs

        selector = fs.FileSelector(join(self.root, "versions"), allow_not_found=True)
        infos = with_retries(lambda: self.filesystem.get_file_info(selector), f"list {self.uri}/versions")
        return [int(m.group(1)) for i in infos if (m := re.match(r"^v(\d{4,})\.claim\.json$", i.base_name))]

    def point_to(self, number: int, expected, details: dict) -> dict:
        """Move the pointer to `number` if it is still as read (`expected`, a `Stored`); the new pointer body.
        A pointer moved meanwhile raises PromotionConflict and changes nothing."""
        record = self.versions().get(number)
        if record is None:
            raise RegistryError(f"{self.uri}: version {number} is not a complete version")
        previous = expected.body or {}
        entry = {"version": number, "promoted_at": _now(), **details}
        body = {
            **entry,
            "model_sha256": record["model_sha256"],
            "previous": previous.get("version"),
            "history": ([entry] + list(previous.get("history") or []))[:HISTORY],
            "nonce": uuid.uuid4().hex,
        }
        if self.store.put_if(POINTER, body, expected.version) is None:
            now = self.pointer().body or {}
            raise PromotionConflict(
                f"{self.uri}: another promotion moved the pointer to {version_name(now.get('version', 0))} while "
                f"this one was gated against {version_name(previous['version']) if previous else 'no version'}; "
                "nothing was changed: run promote again to gate against the new current version"
            )
        return body


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_json_file(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _training_data(config: dict) -> list[dict]:
    """The files a run trained and validated on (metrics.json's config), with a sha256 of each readable here."""
    found = []
    for key in ("train", "validation", "data_dir"):
        value = config.get(key)
        if not value:
            continue
        entry = {"role": key, "path": value}
        path = Path(value)
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            entry.update(sha256=digest.hexdigest(), size=path.stat().st_size)
        found.append(entry)
    return found


def resolve(model: str, s3_endpoint: str | None = None) -> str:
    """`--model REGISTRY[@N]` as a local model dir and the version it is."""
    root, number = split_ref(model)
    return Registry(root, s3_endpoint).resolve(number)


def version_of(model_path: str) -> dict | None:
    """The registry record a local model dir carries (a version dir or its cached copy), None for any other."""
    record = Path(model_path) / REGISTERED
    return _read_json_file(record) or None if record.is_file() else None


def score(model_path: str, gold: list[str], backend: str, max_examples: int | None = None) -> dict[str, dict]:
    """{gold file: evaluate's metrics} of a local model dir: the scorer and engine `evaluate --backend` runs."""
    from nlpbatch.evaluation import eval_config, evaluate_model
    from nlpbatch.tasks import task_of_model

    cfg = eval_config(task_of_model(model_path), model_path, quiet=True)
    return {path: evaluate_model(cfg, path, max_examples=max_examples, backend=backend)[0] for path in gold}


def compared(metrics: dict) -> dict[str, float]:
    """The metrics a promotion prints side by side: every F1, accuracy and exact match, per type too, flattened."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        elif isinstance(value, (int, float)) and re.search(r"(f1|accuracy|exact)", prefix, re.I):
            flat[prefix.rstrip(".")] = float(value)

    walk("", metrics)
    return flat


def promote(
    registry: str,
    model: str | None = None,
    version: int | None = None,
    gold: list[str] = (),
    max_drop: float = 0.0,
    backend: str = "auto",
    force: bool = False,
    max_examples: int | None = None,
    s3_endpoint: str | None = None,
) -> dict:
    """Make a candidate current: a model dir (`model`, registered as the next version once it passes) or a
    registered `version` (a rollback). The candidate and the current version are scored on the same `gold`
    files; the pointer moves only if the candidate's gate metric is not below the current's by more than
    `max_drop` (a share: 0.01 is one point of F1) on any file. The first promotion and `force` need no gate.
    Returns {promoted, version, previous, gate: {file: {candidate, current, drop, passed}}, table}; a refused
    candidate returns promoted False and changes nothing."""
    from nlpbatch.config import ConfigError
    from nlpbatch.models import local_model_path
    from nlpbatch.tasks import get_task, task_of_model

    if (model is None) == (version is None):
        raise ConfigError("promote: give --model RUN_DIR (a new candidate) or --version N (a registered one)")
    if max_drop < 0:
        raise ConfigError(f"--max-drop must be >= 0, got {max_drop}")
    reg = Registry(registry, s3_endpoint)
    expected = reg.pointer()  # what the gate is against; the pointer moves only if it is still this
    current = int(expected.body["version"]) if expected.body else None
    candidate = local_model_path(model) if model is not None else reg.resolve(version)
    task = task_of_model(candidate)
    result: dict = {"promoted": False, "previous": current, "forced": force, "gate": {}, "table": {}}
    if current is not None and not force:
        incumbent = reg.resolve(current)
        if task_of_model(incumbent) != task:
            raise ConfigError(f"{registry}: the current version is a {task_of_model(incumbent)} model, not {task}")
        if not gold:
            raise ConfigError("promote: give --gold FILE (scored by both models), or --force to skip the gate")
        gate = get_task(task).gate_metric
        if gate is None:
            raise ConfigError(f"task {task} names no gate metric (Task.gate_metric): promote with --force")
        key, scale = gate
        ours, theirs = score(candidate, gold, backend, max_examples), score(incumbent, gold, backend, max_examples)
        for path in gold:
            drop = (theirs[path][key] - ours[path][key]) / scale
            result["gate"][path] = {
                "metric": key,
                "candidate": ours[path][key],
                "current": theirs[path][key],
                "drop": round(drop, 6),
                "passed": drop <= max_drop + 1e-12,
            }
            result["table"][path] = {
                name: [theirs_value, compared(ours[path]).get(name)]
                for name, theirs_value in compared(theirs[path]).items()
            }
        if not all(g["passed"] for g in result["gate"].values()):
            return result
    number = reg.register(candidate) if model is not None else version
    details = {"forced": force, "gate": result["gate"], "max_drop": max_drop, "backend": backend}
    if model is not None:
        details["source"] = str(Path(candidate).resolve())
    reg.point_to(number, expected, details)
    result.update(promoted=True, version=number)
    return result
