"""`nlpbatch show`: the published rows in the terminal and as an HTML page, checked in a real headless Chromium."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from nlpbatch.annotate.pipeline import run_annotation
from nlpbatch.config import load_annotate_config

pytestmark = pytest.mark.integration
TEXTS = ["Angela Merkel met Emmanuel Macron in Paris on Monday.", "Zoë <script>alert(1)</script> & Société Générale."]


@pytest.fixture(scope="module")
def published(tiny_ner_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("show")
    corpus = tmp / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS * 3)))
    cfg = load_annotate_config(
        task="ner", model=str(tiny_ner_model), input=str(corpus), output=str(tmp / "out"), runner="local"
    )
    manifest = run_annotation(cfg)
    rows = {}
    import pyarrow.parquet as pq

    for path in manifest["output_files"]:  # relative to the output
        rows.update({r["id"]: r for r in pq.read_table(tmp / "out" / path).to_pylist()})
    assert sum(len(r["entities"]) for r in rows.values()) > 5  # the random tiny model tags plenty
    return tmp / "out", rows


def test_show_prints_rows_with_their_spans(published, tmp_path):
    out, rows = published
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "show", str(out), "--n", "2"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    shown = re.findall(r"^(d\d)$", proc.stdout, re.M)
    assert len(shown) == 2  # --n
    for doc_id in shown:
        marked = re.findall(r"\[([^\]]*)\]\((\w+(?:-\w+)?)\)", proc.stdout.split(doc_id + "\n", 1)[1].split("\n")[0])
        assert marked == [(e["text"], e["label"]) for e in rows[doc_id]["entities"]]  # not a TTY: [text](LABEL)


def test_show_rejects_an_output_without_text(published, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nlpbatch", "show", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no _SUCCESS.json" in proc.stderr


def test_html_page_renders_in_headless_chromium(published, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium: apt-get install chromium (.ci/run installs it when it runs as root)")
    out, rows = published
    page = tmp_path / "page.html"
    proc = subprocess.run(
        [sys.executable, "-m", "nlpbatch", "show", str(out), "--n", "6", "--html", str(page)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,900"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    marks = re.findall(r'<mark class="ent"[^>]*>(.*?)<span class="label">(.*?)</span></mark>', dom)
    expected = [e for doc_id in sorted(rows)[:6] for e in rows[doc_id]["entities"]]
    unescape = __import__("html").unescape
    assert sorted((unescape(t), label) for t, label in marks) == sorted((e["text"], e["label"]) for e in expected)
    assert "<script>alert" not in dom  # the document text is escaped, never run

    shot = tmp_path / "page.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    from nlpbatch.show import COLOURS

    pixels = set(Image.open(shot).convert("RGB").getdata())
    drawn = {label for label, hex_ in COLOURS.items() if tuple(int(hex_[i : i + 2], 16) for i in (1, 3, 5)) in pixels}
    labels = {e["label"].split("-")[-1] for e in expected}
    assert drawn & labels, f"no highlight colour on the screenshot (labels {labels})"
