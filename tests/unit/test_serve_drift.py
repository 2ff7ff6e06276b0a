"""`tuneforge monitor drift`: in-distribution production prompts raise no alert, shifted ones do (exit code 1)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from tuneforge.cli.main import app
from tuneforge.serve.db.store import Store
from tuneforge.serve.drift import centroid_distance, compare, mmd_test


def test_compare_flags_novel_and_longer_prompts():
    training = [f"Extract the contact as JSON. Person {i} works at Company {i} in Denver." for i in range(40)]
    same, _, _ = compare(training[:20], training)
    assert not same.alert and same.novel_share == 0.0 and same.length_ks < 0.3
    shifted = [("Please write a long essay about the history of medieval agriculture in northern Europe, covering "
                f"crop rotation and guilds, variant {i}") for i in range(20)]
    drifted, _, _ = compare(shifted, training)
    assert drifted.alert and drifted.novel_share == 1.0 and drifted.length_ks > 0.9
    assert any("n-gram novel" in r for r in drifted.reasons)


def test_cli_reads_the_request_log_and_exits_1_on_alert(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Extract the contact: Person {i} works at Company {i} in Denver."},
        {"role": "assistant", "content": "{}"}]}) + "\n" for i in range(30)))
    store = Store(tmp_path / "serve.db")
    for i in range(10):
        store.log_request(id=f"r{i}", status=200, prompt=json.dumps([
            {"role": "user", "content": f"Extract the contact: Person {i} works at Company {i} in Denver."}]))
    runner = CliRunner()
    calm = runner.invoke(app, ["monitor", "drift", "--log", str(tmp_path / "serve.db"), "--train", str(train),
                               "--out", str(tmp_path / "d1"), "--embedding-model", "none"])
    assert calm.exit_code == 0, calm.output
    assert "<svg" in (tmp_path / "d1" / "drift.html").read_text()
    for i in range(10, 40):
        store.log_request(id=f"r{i}", status=200, prompt=json.dumps(f"tell me a joke about penguins number {i}"))
    alert = runner.invoke(app, ["monitor", "drift", "--log", str(tmp_path / "serve.db"), "--train", str(train),
                                "--out", str(tmp_path / "d2"), "--embedding-model", "none"])
    assert alert.exit_code == 1 and json.loads((tmp_path / "d2" / "drift.json").read_text())["alert"]
    assert json.loads((tmp_path / "d1" / "drift.json").read_text())["embedding_shift"].startswith("not computed")


@pytest.mark.slow
def test_bundled_minilm_measures_a_topic_shift_and_not_a_resample():
    """The real embedder (rag/embed.py's catalog MiniLM): the quickstart's test prompts stay under the distance
    threshold against its training prompts, off-topic prompts are far beyond it."""
    from tuneforge.data.formats import load_dataset_file
    from tuneforge.data.text import prompt_text
    from tuneforge.rag.embed import Embedder

    embedder = Embedder("all-minilm-l6-v2")
    training = [prompt_text(r) for r in load_dataset_file("quickstart:train.jsonl").rows[:60]]
    same = [prompt_text(r) for r in load_dataset_file("quickstart:test.jsonl").rows[:20]]
    jokes = [f"tell me a joke about penguins number {i}" for i in range(20)]
    calm, _, _ = compare(same, training, embedder=embedder, max_ks=1.0, max_novel_share=1.0)
    drifted, _, _ = compare(jokes, training, embedder=embedder, max_ks=1.0, max_novel_share=1.0)
    assert calm.embedding_shift["centroid_cosine_distance"] < 0.05 and not calm.alert
    assert drifted.embedding_shift["centroid_cosine_distance"] > 0.3 and drifted.alert
    assert drifted.embedding_shift["mmd_pvalue"] < 0.01


def test_embedding_distance_hand_worked():
    x, y = [1.0, 0.0], [0.0, 1.0]
    assert centroid_distance(np.array([x, x]), np.array([y, y])) == pytest.approx(1.0)
    # centroid of {x, y} is (0.5, 0.5): cosine with x is 1/sqrt(2)
    assert centroid_distance(np.array([x]), np.array([x, y])) == pytest.approx(1 - 1 / math.sqrt(2))
    # two copies of x vs two of y: squared distance 2 across, 0 within; bandwidth = median positive = 2
    # MMD^2 = k(x,x) + k(y,y) - 2 k(x,y) = 1 + 1 - 2 exp(-2/2)
    mmd2, pvalue = mmd_test(np.array([x, x]), np.array([y, y]), permutations=50)
    assert mmd2 == pytest.approx(2 - 2 / math.e)
    assert 0 < pvalue <= 1


class FakeEmbedder:
    """Topic vectors: 'contact' prompts point one way, anything else another (plus a little per-prompt noise)."""

    name = "fake"

    def embed(self, texts):
        rng = np.random.default_rng(0)
        out = []
        for text in texts:
            v = np.array([1.0, 0.0, 0.0]) if "contact" in text.lower() else np.array([0.0, 1.0, 0.0])
            v = v + 0.05 * rng.standard_normal(3)
            out.append(v / np.linalg.norm(v))
        return np.array(out)


def test_embedding_shift_alerts_only_on_a_topic_change():
    training = [f"Extract the contact: Person {i} works at Company {i}." for i in range(30)]
    same, _, _ = compare([f"Extract the contact: Person {i} lives in Oslo." for i in range(30)], training,
                         embedder=FakeEmbedder(), max_ks=1.0, max_novel_share=1.0)
    assert not same.alert and same.embedding_shift["centroid_cosine_distance"] < 0.01
    other, _, _ = compare([f"Write a poem number {i} about the sea." for i in range(30)], training,
                          embedder=FakeEmbedder(), max_ks=1.0, max_novel_share=1.0)
    assert other.alert and other.reasons == [r for r in other.reasons if r.startswith("prompt embeddings shifted")]
    assert other.embedding_shift["centroid_cosine_distance"] > 0.9 and other.embedding_shift["mmd_pvalue"] < 0.01


def test_an_unavailable_embedding_model_leaves_the_other_checks_running(tmp_path, monkeypatch):
    import tuneforge.rag.embed as embed
    from tuneforge.errors import ModelSourceError

    def offline(ref):
        raise ModelSourceError(f"embedding model {ref!r} could not be loaded: no network")

    monkeypatch.setattr(embed, "Embedder", offline)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"Extract the contact {i}.", "completion": "{}"}) + "\n"
                             for i in range(10)))
    store = Store(tmp_path / "serve.db")
    store.log_request(id="r0", status=200, prompt=json.dumps("Extract the contact 3."))
    result = CliRunner().invoke(app, ["monitor", "drift", "--log", str(tmp_path / "serve.db"), "--train", str(train),
                                      "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert report["embedding_shift"].startswith("not computed: embedding model 'all-minilm-l6-v2' unavailable")
    assert report["novel_share"] == 0.0
