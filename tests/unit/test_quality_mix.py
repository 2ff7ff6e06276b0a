"""Dataset mixtures: ratios with a total, target counts, determinism, provenance, too-small sources."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from tuneforge.data.mix import MixSource, mix_datasets
from tuneforge.errors import DataError


def rows(tag: str, n: int) -> list[dict]:
    return [{"prompt": f"{tag}{k}", "completion": "x", "meta": {"orig": k}} for k in range(n)]


def test_ratio_mode_counts_and_provenance():
    result = mix_datasets(
        [MixSource("chat", rows("c", 100), weight=3), MixSource("code", rows("k", 100), weight=1)],
        total=40, seed=1,
    )
    assert Counter(r["meta"]["source"] for r in result.rows) == {"chat": 30, "code": 10}
    for r in result.rows:
        src, i = r["meta"]["source"], r["meta"]["source_index"]
        assert r["prompt"] == f"{'c' if src == 'chat' else 'k'}{i}" and r["meta"]["orig"] == i
    m = result.manifest
    assert m["mode"] == "ratio" and m["total"] == 40 and m["seed"] == 1 and not m["replacement"]
    assert [(s["name"], s["requested"], s["actual"], s["unique"], s["actual_share"])
            for s in m["sources"]] == [("chat", 30.0, 30, 30, 0.75), ("code", 10.0, 10, 10, 0.25)]


def test_rounding_still_hits_the_total():
    result = mix_datasets([MixSource(n, rows(n, 10), weight=1) for n in "abc"], total=10)
    assert [s["actual"] for s in result.manifest["sources"]] == [4, 3, 3]
    assert [round(s["requested"], 4) for s in result.manifest["sources"]] == [3.3333] * 3


def test_count_mode_and_determinism():
    sources = [MixSource("a", rows("a", 20), count=5), MixSource("b", rows("b", 20), count=2)]
    first = mix_datasets(sources, seed=9)
    assert Counter(r["meta"]["source"] for r in first.rows) == {"a": 5, "b": 2}
    assert mix_datasets(sources, seed=9).rows == first.rows
    assert mix_datasets(sources, seed=10).rows != first.rows
    # A source's draw depends on the seed and its name only, not on the other sources.
    alone = mix_datasets([sources[0]], seed=9)
    assert sorted(r["meta"]["source_index"] for r in alone.rows) == sorted(
        r["meta"]["source_index"] for r in first.rows if r["meta"]["source"] == "a")


def test_too_small_source_is_an_error_unless_replacement():
    sources = [MixSource("small", rows("s", 5), count=8), MixSource("big", rows("b", 50), count=8)]
    with pytest.raises(DataError, match="small has 5 rows, 8 requested"):
        mix_datasets(sources)
    result = mix_datasets(sources, replacement=True, seed=2)
    small = result.manifest["sources"][0]
    assert small["actual"] == 8 and small["unique"] <= 5


def test_manifest_hashes_source_files_and_output(tmp_path):
    path = tmp_path / "a.jsonl"
    data = rows("a", 4)
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    result = mix_datasets([MixSource("a", data, count=4, path=path)])
    src = result.manifest["sources"][0]
    assert src["path"] == str(path)
    assert src["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(result.manifest["sha256"]) == 64


def test_mode_errors():
    with pytest.raises(ValueError, match="every source needs a weight"):
        mix_datasets([MixSource("a", rows("a", 5), weight=1), MixSource("b", rows("b", 5), count=1)])
    with pytest.raises(ValueError, match="ratio mode needs a non-negative total"):
        mix_datasets([MixSource("a", rows("a", 5), weight=1)])
    with pytest.raises(ValueError, match="not both"):
        mix_datasets([MixSource("a", rows("a", 5), count=1)], total=3)
    with pytest.raises(ValueError, match="source names must be unique"):
        mix_datasets([MixSource("a", rows("a", 5), count=1), MixSource("a", rows("b", 5), count=1)])


def test_replacement_upsamples_only_short_sources_and_keeps_every_row():
    # "exact" has exactly its quota: all 300 distinct rows, none twice. "short" is upsampled from 50 to 120:
    # every row appears, twice or three times.
    sources = [MixSource("exact", rows("e", 300), count=300), MixSource("short", rows("s", 50), count=120)]
    result = mix_datasets(sources, replacement=True, seed=0)
    exact, short = result.manifest["sources"]
    assert (exact["actual"], exact["unique"], exact["sampling"]) == (300, 300, "without_replacement")
    assert (short["actual"], short["unique"], short["sampling"]) == (120, 50, "upsampled")
    repeats = Counter(r["meta"]["source_index"] for r in result.rows if r["meta"]["source"] == "short")
    assert set(repeats.values()) == {2, 3} and sum(repeats.values()) == 120
    assert mix_datasets(sources, replacement=True, seed=0).rows == result.rows
