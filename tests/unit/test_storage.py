"""Storage details a user meets on a real cluster: endpoints without a scheme, the region from ~/.aws/config,
transient errors retried (and only those), and the one JSONL line splitter."""

import io

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
