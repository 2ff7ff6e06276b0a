"""Audit findings on planted data: duplicates, conflicts, PII, leakage, labels, truncation loss."""
from __future__ import annotations

import json

from tuneforge.data.audit import AuditInputs, run_audit
from tuneforge.data.audit_report import render_html
from tuneforge.data.chat_template import prepare_training_template
from tuneforge.data.formats import load_dataset_file
from tuneforge.data.render import render_example

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec".split()


def chat(q, a, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def sentence(k, n=30):
    return " ".join(f"{WORDS[(k * 7 + i) % len(WORDS)]}{(k * 31 + i * 17) % 97}" for i in range(n))


def write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def planted(tmp_path):
    rows = [chat(sentence(k), sentence(k + 100), category="a" if k % 4 else "b") for k in range(20)]
    rows[5] = chat(rows[2]["messages"][0]["content"].upper(), rows[2]["messages"][1]["content"].upper(), category="a")  # exact dup of line 3
    near = rows[8]["messages"][1]["content"].split()
    near[-1] = "zulu"
    rows[11] = chat(rows[8]["messages"][0]["content"], " ".join(near), category="a")  # near dup (and conflict) of line 9
    rows[14] = chat(rows[13]["messages"][0]["content"], "a different answer", category="a")  # conflict with line 14
    rows[16] = chat("Write to jane.doe@example.com or call +1 415 555 0134", "My card 4111 1111 1111 1111", category="b")
    rows[17] = chat(sentence(17, 400), sentence(117, 400), category="a")  # far over max length
    train = write(tmp_path, "train.jsonl", rows)
    test = write(tmp_path, "test.jsonl", [chat("unrelated question here", "x"), rows[9]])  # test line 2 = train line 10
    return train, test


def test_audit_findings_on_planted_data(tmp_path, tokenizer):
    train, test = planted(tmp_path)
    report = run_audit(AuditInputs(train=train, test=test, max_length=500, label_field="meta.category"),
                       tokenizer=tokenizer, context=8192)
    dup = report["duplicates"]
    assert dup["exact"] == [{"lines": [3, 6]}]
    assert [c["lines"] for c in dup["near"]] == [[9, 12]]
    assert [c["lines"] for c in report["conflicts"]["items"]] == [[9, 12], [14, 15]]
    assert report["pii"]["counts"] == {"CREDIT_CARD": 1, "EMAIL": 1, "PHONE": 1}
    assert report["pii"]["examples"]["CREDIT_CARD"] == [{"line": 17, "masked": "**** **** **** 1111"}]
    leak = report["leakage"]
    assert leak["exact_pairs"] == 1
    assert leak["pairs"][0] == {"kind": "exact", "ref_split": "train", "ref_line": 10, "eval_split": "test",
                                "eval_line": 2, "share": 1.0}
    assert report["label_balance"]["counts"] == {"a": 15, "b": 5}

    tokens = report["tokens"]
    assert tokens["over_max_length"] == 1 and tokens["truncated_rows"][0]["line"] == 18
    assert tokens["formula_check"]["mismatches"] == 0
    # The lost trained tokens equal what the real training render drops.
    data = load_dataset_file(train)
    template = prepare_training_template(tokenizer, data.rows)
    full = render_example(data.rows[17], tokenizer, template, 1 << 30)
    cut = render_example(data.rows[17], tokenizer, template, 500)
    lost = sum(full["assistant_masks"]) - sum(cut["assistant_masks"])
    trained = sum(sum(render_example(r, tokenizer, template, 1 << 30)["assistant_masks"]) for r in data.rows)
    assert tokens["trained_tokens_lost_to_truncation"] == lost > 0
    assert tokens["trained_tokens"] == trained
    assert tokens["lost_trained_share"] == round(lost / trained, 6)
    html = render_html(report)
    assert "max length 500" in html and "context window 8192" in html and "<script" not in html


def test_html_escapes_data(tmp_path):
    path = write(tmp_path, "x.jsonl", [chat("<script>alert(1)</script>", "ok", label="<b>x</b>")])
    report = run_audit(AuditInputs(train=path, label_field="meta.label"))
    html = render_html(report)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_kto_label_balance_and_preference_lengths(tmp_path, tokenizer):
    kto = write(tmp_path, "k.jsonl", [{"prompt": "p1", "completion": "c", "label": True},
                                      {"prompt": "p2", "completion": "c", "label": False},
                                      {"prompt": "p3", "completion": "c", "label": True}])
    report = run_audit(AuditInputs(train=kto), tokenizer=tokenizer)
    assert report["label_balance"]["counts"] == {"true": 2, "false": 1}
    pref = write(tmp_path, "p.jsonl", [{"prompt": "a b c", "chosen": "yes " * 50, "rejected": "no"}])
    tokens = run_audit(AuditInputs(train=pref, max_length=20), tokenizer=tokenizer)["tokens"]
    assert set(tokens["fields"]) == {"prompt", "chosen", "rejected"} and tokens["over_max_length"] == 1
    assert tokens["trained_tokens_lost_to_truncation"] > 0
