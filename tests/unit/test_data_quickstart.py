"""The bundled quickstart dataset: reproducible from its generator, valid, and honestly split."""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.data.chat_template import prepare_training_template
from tuneforge.data.formats import load_dataset_file, resolve_data_path
from tuneforge.data.render import render_dataset

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_quickstart_data.py"
SHIPPED = ROOT / "src" / "tuneforge" / "assets" / "quickstart"
FILES = ["train.jsonl", "validation.jsonl", "test.jsonl", "README.md"]


def test_generator_reproduces_shipped_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name
    assert subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True).returncode == 0
    (tmp_path / "test.jsonl").write_text("changed\n")
    stale = subprocess.run([sys.executable, str(SCRIPT), "--check", "--out", str(tmp_path)], capture_output=True,
                           text=True)
    assert stale.returncode == 1 and "test.jsonl" in stale.stderr


def _entities(split: str) -> dict[str, set[str]]:
    out = {"first": set(), "last": set(), "company": set(), "city": set()}
    for row in load_dataset_file(f"quickstart:{split}.jsonl").rows:
        answer = json.loads(row["messages"][-1]["content"])
        first, last = answer["name"].split(" ", 1)
        out["first"].add(first)
        out["last"].add(last)
        out["company"].add(answer["company"])
        out["city"].add(answer["city"])
    return out


def test_splits_sizes_shape_and_entity_disjointness():
    sizes = {"train": 320, "validation": 40, "test": 100}
    entities = {}
    for split, size in sizes.items():
        data = load_dataset_file(f"quickstart:{split}.jsonl")
        assert data.format == "chat" and len(data.rows) == size
        ids = [row["meta"]["id"] for row in data.rows]
        assert len(set(ids)) == size and all(i.startswith(split + "-") for i in ids)
        for row in data.rows:
            roles = [m["role"] for m in row["messages"]]
            assert roles == ["user", "assistant"]
            user, answer = row["messages"][0]["content"], json.loads(row["messages"][1]["content"])
            assert user.startswith('Extract the contact as JSON with keys "name", "company", "city".\n\n')
            assert list(answer) == ["name", "company", "city"]
            assert all(value in user for value in answer.values())
        entities[split] = _entities(split)
    for kind in ("first", "last", "company", "city"):
        assert not entities["train"][kind] & entities["test"][kind], kind
        assert not entities["train"][kind] & entities["validation"][kind], kind
        assert not entities["validation"][kind] & entities["test"][kind], kind


def test_distractors_present_and_prompts_short(tokenizer):
    rows = load_dataset_file("quickstart:train.jsonl").rows
    # Some sentences mention a second city that is not the answer, so the task is not trivial.
    cities = set(runpy.run_path(str(SCRIPT))["POOLS"]["train"]["city"])
    with_distractor = sum(
        1 for r in rows
        if sum(c in r["messages"][0]["content"] for c in cities) > 1
    )
    assert with_distractor >= len(rows) // 10
    data = load_dataset_file("quickstart:train.jsonl")
    rendered, stats = render_dataset(data, tokenizer, prepare_training_template(tokenizer, data.rows), 512)
    assert stats["truncated"] == 0 and stats["no_trained_tokens"] == 0
    assert max(len(r["input_ids"]) for r in rendered) <= 128


def test_readme_names_origin_and_command():
    card = resolve_data_path("quickstart:train.jsonl").with_name("README.md").read_text()
    assert "Synthetic" in card and "python3 scripts/make_quickstart_data.py" in card


@pytest.mark.parametrize("split", ["validation", "test"])
def test_heldout_rows_not_in_train(split):
    train = {r["messages"][0]["content"] for r in load_dataset_file("quickstart:train.jsonl").rows}
    assert not train & {r["messages"][0]["content"] for r in load_dataset_file(f"quickstart:{split}.jsonl").rows}
