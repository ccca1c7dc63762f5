"""Storage details a user meets on a real cluster: endpoints without a scheme, the region from ~/.aws/config,
transient errors retried (and only those), and the one JSONL line splitter."""

import io
import os

import pytest

from nlpbatch.annotate.reader import iter_lines
from nlpbatch.storage import StorageError, filesystem_for, normalize_endpoint, with_retries


def test_endpoint_without_scheme():
    assert normalize_endpoint("https://minio.example:9000") == "https://minio.example:9000"
    assert normalize_endpoint("127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert normalize_endpoint("localhost:9000") == "http://localhost:9000"
    with pytest.raises(StorageError, match=r"'minio:9000' has no scheme: write http://minio:9000 or https://"):
        normalize_endpoint("minio:9000")
    filesystem, path = filesystem_for("s3://bucket/prefix/", "127.0.0.1:9000")
    assert path == "bucket/prefix"


def test_region_comes_from_the_aws_chain(tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-3\n")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert filesystem_for("s3://bucket/x", "http://127.0.0.1:9")[0].region == "eu-west-3"
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert filesystem_for("s3://bucket/x", "http://127.0.0.1:9")[0].region == "ap-south-1"


def test_with_retries_retries_transient_errors_only(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate. (503)")
        return "ok"

    assert with_retries(flaky, "put") == "ok" and len(calls) == 4
    with pytest.raises(PermissionError):
        with_retries(lambda: (_ for _ in ()).throw(PermissionError("AccessDenied")), "put")
    calls.clear()
    with pytest.raises(OSError, match="503"):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(OSError("503 Slow Down")), "put", attempts=3)
    assert len(calls) == 3


def test_one_line_splitter():
    data = b'\xef\xbb\xbf{"a": 1}\r\n\r\n   \n{"b": "x\xe2\x80\xa8y\xc2\x85z"}\n\xff\n{"c": 3}'
    for chunk in (1, 2, 3, 7, 1 << 20):  # the result never depends on where the chunks fall
        got = list(iter_lines(io.BytesIO(data), chunk_size=chunk))
        assert got == [(1, b'{"a": 1}'), (4, b'{"b": "x\xe2\x80\xa8y\xc2\x85z"}'), (5, b"\xff"), (6, b'{"c": 3}')]


def _files(root, **kw):
    from nlpbatch.storage import list_input_infos

    filesystem, path = filesystem_for(str(root))
    return sorted(os.path.relpath(f.path, root) for f in list_input_infos(str(root), filesystem, path, **kw))


def test_input_listing_reads_each_row_once(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    for rel in [
        "v2/a.jsonl",
        "v2/sub/b.parquet",
        "v2/_temporary/0/a.jsonl",  # Spark's uncommitted attempt
        "v2/.staging/a.jsonl",
        "v2/sub/_SUCCESS",
        "v2/notes.txt",
        "v2/UPPER.JSONL",
        "v2/c.jsonl.zst",
    ]:
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_text("{}\n")
    os.symlink(corpus / "v2", corpus / "latest")  # latest -> v2
    os.symlink(corpus / "v2", corpus / "v2" / "sub" / "loop")  # a loop
    expected = ["v2/UPPER.JSONL", "v2/a.jsonl", "v2/c.jsonl.zst", "v2/sub/b.parquet"]
    assert _files(corpus) == expected
    assert "skipping 1 file(s) that are not .parquet, .jsonl, .csv or .tsv: " in capsys.readouterr().err
    followed = _files(corpus, follow_symlinks=True)  # asked: each real file once, the loop ends
    assert len(followed) == len(expected) and {os.path.basename(f) for f in followed} == {
        os.path.basename(f) for f in expected
    }
    assert _files(corpus / "latest") == ["UPPER.JSONL", "a.jsonl", "c.jsonl.zst", "sub/b.parquet"]  # named: read


def test_globs_match_segment_by_segment_and_existing_paths_are_literal(tmp_path):
    from nlpbatch.storage import list_input_infos, match_segments, overlap

    for rel in ["in/a.jsonl", "in/deep/b.jsonl", "in/deep/er/c.jsonl", "run[1]/d.jsonl"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    filesystem, _ = filesystem_for(str(tmp_path))

    def listed(pattern):
        infos = list_input_infos(pattern, filesystem, str(tmp_path / pattern))
        return sorted(os.path.relpath(f.path, tmp_path) for f in infos)

    assert listed("in/*.jsonl") == ["in/a.jsonl"]  # `*` does not cross `/`
    assert listed("in/*/*.jsonl") == ["in/deep/b.jsonl"]
    assert listed("in/**/*.jsonl") == ["in/a.jsonl", "in/deep/b.jsonl", "in/deep/er/c.jsonl"]
    assert listed("run[1]") == ["run[1]/d.jsonl"]  # a folder named with brackets is that folder, not a glob
    assert match_segments(["**"], []) and not match_segments(["*"], ["a", "b"])
    assert overlap("/x/corpus", "/x/corpus/data") and overlap("/x/out/", "/x/out") and not overlap("/x/a", "/x/ab")


def test_unreadable_compression_is_an_error_not_a_silent_skip(tmp_path):
    from nlpbatch.storage import StorageError, list_input_infos

    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl.xz").write_bytes(b"\xfd7zXZ")
    filesystem, path = filesystem_for(str(tmp_path))
    with pytest.raises(StorageError, match=r"b.jsonl.xz: .xz compression cannot be read; use .jsonl, .jsonl.gz"):
        list_input_infos(str(tmp_path), filesystem, path)


def test_sdk_throttling_errors_are_retried(monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def throttled():
        calls.append(1)
        if len(calls) < 3:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce"}, "ResponseMetadata": {}}, "PutObject")
        return "ok"

    assert with_retries(throttled, "lease") == "ok" and len(calls) == 3
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}, "ResponseMetadata": {}}, "PutObject")
    with pytest.raises(ClientError):
        with_retries(lambda: (_ for _ in ()).throw(denied), "lease")


def test_unknown_hosts_are_not_retried():
    from nlpbatch.storage import is_transient

    # a host that does not resolve is not transient, whatever else the message says ("connection" is)
    assert not is_transient(OSError("AWS Error NETWORK_CONNECTION: curlCode: 6, Couldn't resolve host name"))
    assert is_transient(OSError("AWS Error NETWORK_CONNECTION: connection reset by peer"))
