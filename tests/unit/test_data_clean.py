"""`data clean`: every removed or changed row is in the log with its source line and reason."""
from __future__ import annotations

import json

import pytest

from tuneforge.data.audit import TokenCounter
from tuneforge.data.clean import clean_rows, write_clean
from tuneforge.data.formats import load_dataset_file
from tuneforge.errors import DataError


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def write(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


LONG = " ".join(f"word{i}" for i in range(300))
BASE = "the quick brown fox jumps over the lazy dog near the river bank at dawn every single day of the year"


def test_log_accounts_for_every_row(tmp_path, tokenizer):
    path = write(tmp_path, [chat("Hello", "Hi"), chat("hello", "hi"), chat(BASE, "yes"), chat(BASE + " again", "yes"),
                            chat("Card 4111 1111 1111 1111", "ok"), chat("long one", LONG), "{broken",
                            chat("last", "one")])
    data = load_dataset_file(path, skip_invalid=True)
    result = clean_rows(data, dedup="near", near_threshold=0.7, max_length=120, length_policy="drop",
                        tokenizer=tokenizer)
    log = {e["line"]: e for e in result.log}
    assert log[2] == {"line": 2, "action": "removed", "reason": "exact_duplicate", "kept_line": 1}
    assert log[4]["reason"] == "near_duplicate" and log[4]["kept_line"] == 3
    assert log[5] == {"line": 5, "action": "changed", "reason": "pii_redacted", "types": ["CREDIT_CARD"],
                      "fields": ["messages[0].content"], "matches": 1}
    assert log[6]["reason"] == "too_long" and log[6]["tokens"] > 120
    assert log[7]["reason"] == "invalid"
    assert sorted(log) == [2, 4, 5, 6, 7]
    # Completeness: rows in = rows out + logged removals; every output row not logged is unchanged.
    removed = [e for e in result.log if e["action"] == "removed"]
    assert result.summary["rows_in"] == 8 and result.summary["rows_out"] == 4 == 8 - len(removed)
    assert result.summary["removed"] == {"invalid": 1, "exact_duplicate": 1, "near_duplicate": 1, "too_long": 1}
    assert "4111 1111" not in json.dumps(result.rows) and [r["messages"][0]["content"][:5] for r in result.rows] == [
        "Hello", BASE[:5], "Card ", "last"]
    paths = write_clean(result, tmp_path / "out.jsonl")
    assert len(load_dataset_file(paths["output"])) == 4
    log_lines = (tmp_path / "out.jsonl.cleaning_log.jsonl").read_text().splitlines()
    assert len(log_lines) == 6 and json.loads(log_lines[-1])["summary"]["output_sha256"] == paths["sha256"]


def test_truncate_policy_fits_max_length(tmp_path, tokenizer):
    data = load_dataset_file(write(tmp_path, [chat("short", "fine"), chat("long one", LONG)]))
    result = clean_rows(data, dedup="none", redact_pii=False, max_length=100, length_policy="truncate",
                        tokenizer=tokenizer)
    assert [e["line"] for e in result.log] == [2] and result.log[0]["reason"] == "truncated"
    assert TokenCounter(tokenizer).count(result.rows, "chat").total.max() <= 100
    assert result.rows[1]["messages"][1]["content"].startswith("word0 word1")
    with pytest.raises(DataError, match=r"1 rows of .* are longer than 100 tokens \(lines 2\)"):
        clean_rows(data, max_length=100, length_policy="error", tokenizer=tokenizer)


def test_pii_is_redacted_in_every_field(tmp_path):
    # A row-level "user_email" (kept in the row's meta) and nested meta values are redacted too.
    rows = [dict(chat("Reset my password", "Done."), user_email="jane.doe@example.com",
                 meta={"contact": {"phone": "+44 20 7946 0958"}, "ok": "fine"}), chat("hello", "hi")]
    result = clean_rows(load_dataset_file(write(tmp_path, rows)))
    assert result.rows[0]["meta"] == {"contact": {"phone": "<PHONE>"}, "ok": "fine", "user_email": "<EMAIL>"}
    assert result.log == [{"line": 1, "action": "changed", "reason": "pii_redacted", "types": ["EMAIL", "PHONE"],
                           "fields": ["meta.contact.phone", "meta.user_email"], "matches": 2}]
    assert ("jane.doe" not in json.dumps(result.rows)
            and result.rows[1] == load_dataset_file(write(tmp_path, rows)).rows[1])
