"""Split strategies: determinism, proportions, group isolation, time order, missing fields, writing."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from tuneforge.data.split import allocate, split_rows, write_splits
from tuneforge.errors import DataError

RATIOS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def row(k: int, **meta) -> dict:
    return {"messages": [{"role": "user", "content": f"q{k}"}, {"role": "assistant", "content": "a"}],
            "meta": meta}


def test_allocate_largest_remainder_sums_exactly():
    assert allocate(10, {"a": 0.5, "b": 0.25, "c": 0.25}) == {"a": 5, "b": 3, "c": 2}
    # 5.6 / 0.7 / 0.7: the two largest remainders (0.7) win the two leftover rows.
    assert allocate(7, RATIOS) == {"train": 5, "validation": 1, "test": 1}
    assert sum(allocate(1001, RATIOS).values()) == 1001


def test_random_split_is_deterministic_disjoint_and_complete():
    rows = [row(k) for k in range(50)]
    first = split_rows(rows, strategy="random", ratios=RATIOS, seed=3)
    assert split_rows(rows, strategy="random", ratios=RATIOS, seed=3) == first
    assert {k: len(v) for k, v in first.indices.items()} == {"train": 40, "validation": 5, "test": 5}
    assert sorted(i for v in first.indices.values() for i in v) == list(range(50))
    assert split_rows(rows, strategy="random", ratios=RATIOS, seed=4).indices != first.indices


def test_stratified_split_keeps_label_proportions():
    rows = [row(k, label="x" if k % 5 < 3 else "y") for k in range(100)]  # 60 x, 40 y
    result = split_rows(rows, strategy="stratified", field="meta.label",
                        ratios={"train": 0.5, "test": 0.5}, seed=1)
    for name in ("train", "test"):
        labels = Counter(rows[i]["meta"]["label"] for i in result.indices[name])
        assert labels == {"x": 30, "y": 20}
    assert result == split_rows(rows, strategy="stratified", field="meta.label",
                                ratios={"train": 0.5, "test": 0.5}, seed=1)


def test_grouped_split_never_puts_a_group_in_two_splits():
    rows = [row(k, user=f"u{k // 3}") for k in range(60)]  # 20 users x 3 rows
    result = split_rows(rows, strategy="grouped", field="meta.user", ratios=RATIOS, seed=0)
    owner: dict[str, str] = {}
    for name, idx in result.indices.items():
        for i in idx:
            assert owner.setdefault(rows[i]["meta"]["user"], name) == name
    assert {k: len(v) for k, v in result.indices.items()} == {"train": 48, "validation": 6, "test": 6}
    assert sorted(i for v in result.indices.values() for i in v) == list(range(60))


def test_time_split_oldest_to_train_newest_to_test():
    dates = ["2024-03-01", "2023-01-01T10:00:00Z", "2024-01-01T00:00:00+02:00", "2022-06-30",
             "2024-12-31T23:59:59", "2023-07-04", "2021-01-01", "2024-06-01", "2020-05-05", "2024-02-29"]
    rows = [row(k, ts=d) for k, d in enumerate(dates)]
    result = split_rows(rows, strategy="time", field="meta.ts",
                        ratios={"train": 0.6, "validation": 0.2, "test": 0.2})
    assert result.indices == {"train": [1, 2, 3, 5, 6, 8], "validation": [0, 9], "test": [4, 7]}


def test_missing_field_names_the_lines():
    rows = [row(0, label="a"), row(1), row(2, label="b"), row(3, label=None)]
    for strategy in ("stratified", "grouped", "time"):
        with pytest.raises(DataError, match=r"2 row\(s\) lack the field 'meta.label'.*lines 12, 14"):
            split_rows(rows, [11, 12, 13, 14], strategy=strategy, field="meta.label", ratios=RATIOS)


def test_bad_dates_and_arguments():
    rows = [row(0, ts="2024-01-01"), row(1, ts="yesterday"), row(2, ts=20240101)]
    with pytest.raises(DataError, match=r"2 row\(s\) have a time value.*lines 2, 3"):
        split_rows(rows, strategy="time", field="meta.ts", ratios=RATIOS)
    with pytest.raises(ValueError, match="ratios must sum to 1"):
        split_rows(rows, ratios={"train": 0.8, "test": 0.1})
    with pytest.raises(ValueError, match="needs a field"):
        split_rows(rows, strategy="grouped", ratios=RATIOS)
    with pytest.raises(ValueError, match="unknown split strategy"):
        split_rows(rows, strategy="alphabetical", ratios=RATIOS)  # type: ignore[arg-type]


def test_write_splits_files_and_manifest(tmp_path):
    rows = [row(k, label="x") for k in range(10)]
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = split_rows(rows, strategy="random", ratios=RATIOS, seed=5)
    manifest = write_splits(rows, result, tmp_path / "out", source_path=source)

    assert manifest["seed"] == 5 and manifest["strategy"] == "random" and manifest["ratios"] == RATIOS
    assert manifest["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    for name, idx in result.indices.items():
        path = tmp_path / "out" / f"{name}.jsonl"
        assert manifest[name]["path"] == str(path)
        assert manifest[name]["rows"] == len(idx)
        assert manifest[name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert [json.loads(x) for x in path.read_text().splitlines()] == [rows[i] for i in idx]
    assert json.loads((tmp_path / "out" / "split_manifest.json").read_text()) == manifest
    # Atomic writes leave no temp files behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "split_manifest.json", "test.jsonl", "train.jsonl", "validation.jsonl"
    ]


def test_split_names_may_not_shadow_manifest_keys(tmp_path):
    rows = [row(k) for k in range(4)]
    result = split_rows(rows, ratios={"train": 0.5, "seed": 0.5})
    with pytest.raises(ValueError, match=r"split names \['seed'\] collide"):
        write_splits(rows, result, tmp_path)


def test_time_split_keeps_equal_timestamps_together_and_says_so(tmp_path):
    # Five dates, two rows each; a 50/50 cut of 10 rows would fall between the two 2024-01-03 rows.
    dates = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    rows = [row(k, ts=dates[k // 2]) for k in range(10)]
    result = split_rows(rows, strategy="time", field="meta.ts", ratios={"train": 0.5, "test": 0.5})
    side = {i: name for name, idx in result.indices.items() for i in idx}
    for date in dates:
        assert len({side[k] for k in range(10) if rows[k]["meta"]["ts"] == date}) == 1, date
    assert {k: len(v) for k, v in result.indices.items()} == {"train": 6, "test": 4}
    manifest = write_splits(rows, result, tmp_path)
    ties = json.loads((tmp_path / "split_manifest.json").read_text())["time_ties"]
    assert ties == manifest["time_ties"]
    assert ties["requested_rows"] == {"train": 5, "test": 5}
    assert ties["moved"] == [{"boundary": "train|test", "timestamp": "2024-01-03T00:00:00+00:00", "rows_moved": 1,
                              "into": "train"}]


def test_time_split_later_boundary_keeps_its_requested_position():
    # train|validation moves past a tie; validation|test still cuts at its requested cumulative row (8 of 10).
    stamps = ["2024-01-01"] * 3 + ["2024-01-02"] * 5 + ["2024-01-03", "2024-01-04"]
    rows = [row(k, ts=s) for k, s in enumerate(stamps)]
    result = split_rows(rows, strategy="time", field="meta.ts", ratios={"train": 0.4, "validation": 0.4, "test": 0.2})
    assert {k: len(v) for k, v in result.indices.items()} == {"train": 8, "validation": 0, "test": 2}
    assert result.notes["time_ties"]["moved"][0]["rows_moved"] == 4


def test_resolve_field_looks_in_meta_and_names_what_exists():
    from tuneforge.data.split import resolve_field

    rows = [row(0), row(1, category="a")]  # the first row lacks it; the field still exists
    assert resolve_field(rows, "category", "test") == "meta.category"
    assert resolve_field(rows, "messages", "test") == "messages"
    with pytest.raises(DataError) as err:
        resolve_field(rows, "categroy", "test")
    assert "'categroy'" in err.value.message and "meta.category" in err.value.hint and "messages" in err.value.hint
