"""Audit findings on planted data: duplicates, conflicts, PII, leakage, labels, truncation loss."""
from __future__ import annotations

import json

from tuneforge.data.audit import AuditInputs, run_audit
from tuneforge.data.audit_report import render_html
from tuneforge.data.chat_template import prepare_training_template
from tuneforge.data.formats import load_dataset_file
from tuneforge.data.render import render_example

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec").split()


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
    # exact dup of line 3
    rows[5] = chat(rows[2]["messages"][0]["content"].upper(), rows[2]["messages"][1]["content"].upper(), category="a")
    near = rows[8]["messages"][1]["content"].split()
    near[-1] = "zulu"
    # near dup (and conflict) of line 9
    rows[11] = chat(rows[8]["messages"][0]["content"], " ".join(near), category="a")
    rows[14] = chat(rows[13]["messages"][0]["content"], "a different answer", category="a")  # conflict with line 14
    rows[16] = chat("Write to jane.doe@example.com or call +1 415 555 0134", "My card 4111 1111 1111 1111",
                    category="b")
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
    assert report["pii"]["examples"]["CREDIT_CARD"] == [
        {"line": 17, "field": "messages[1].content", "masked": "**** **** **** 1111"}]
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


def test_audit_finds_pii_in_every_field_and_names_it(tmp_path):
    # A row-level "user_email" is kept in meta; it and nested meta values are personal data too.
    path = write(tmp_path, "m.jsonl", [chat("Reset my password", "Done.", user_email="jane.doe@example.com"),
                                       chat("hello", "hi", meta={"contact": {"phone": "+44 20 7946 0958"}}),
                                       chat("plain", "row")])
    pii = run_audit(AuditInputs(train=path))["pii"]
    assert pii["counts"] == {"EMAIL": 1, "PHONE": 1} and pii["rows_with_pii"] == 2
    assert pii["examples"]["EMAIL"] == [{"line": 1, "field": "meta.user_email", "masked": "j***@e***.com"}]
    assert pii["examples"]["PHONE"][0]["field"] == "meta.contact.phone"
    assert pii["by_field"] == {"meta.contact.phone": {"PHONE": 1}, "meta.user_email": {"EMAIL": 1}}
    assert pii["fields_scanned"] == {"messages[].content": 3, "messages[].role": 3, "meta.contact.phone": 1,
                                     "meta.user_email": 1}
    assert "meta.user_email" in render_html(run_audit(AuditInputs(train=path)))


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


def _token_chart(html: str) -> str:
    start = html.index("<h2>Token lengths")
    return html[start:html.index("</svg>", start)]


def _bars_and_marks(html: str):
    import re

    svg = _token_chart(html)
    bars = [(float(x), float(w)) for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)]
    marks = [float(x) for x in re.findall(r'<line x1="([\d.]+)" y1="[\d.]+" x2="[\d.]+" y2="[\d.]+" '
                                          r'stroke="#(?:dc2626|9333ea)"', svg)]
    return svg, bars, marks


def test_length_histogram_bars_and_markers_share_one_axis(tmp_path, tokenizer):
    # Limits inside the data's range: bars and marker lines on the same linear axis from 0.
    path = write(tmp_path, "mid.jsonl", [chat(sentence(k, 3 + k), sentence(k + 50, 2 + k)) for k in range(12)])
    report = run_audit(AuditInputs(train=path, max_length=20), tokenizer=tokenizer, context=40)
    edges = report["tokens"]["histogram"]["edges"]
    assert 40 < edges[-1]
    _, bars, marks = _bars_and_marks(render_html(report))
    assert len(bars) == len(edges) - 1 and len(marks) == 2
    origin, at_max_len, at_context = bars[0][0], marks[0], marks[1]
    per_token = (at_max_len - origin) / 20
    assert per_token > 0
    assert abs(origin + per_token * 40 - at_context) < 0.5  # both markers on one linear axis from 0
    for k, (x, _) in enumerate(bars):
        assert abs(origin + per_token * edges[k] - x) < 0.5  # each bar starts at its bin's lower edge


def test_length_histogram_axis_fits_short_rows_and_names_far_limits(tmp_path, tokenizer):
    # Issue 13: rows of a few dozen tokens against max length 2048 and a context window of 8192 were drawn as a
    # sliver at the left of a 0..8192 axis. The axis now fits the data; the far limits are named at its end.
    path = write(tmp_path, "short.jsonl", [chat(sentence(k, 3 + k), sentence(k + 50, 2 + k)) for k in range(12)])
    report = run_audit(AuditInputs(train=path, max_length=2048), tokenizer=tokenizer, context=8192)
    edges = report["tokens"]["histogram"]["edges"]
    assert edges[-1] < 200
    svg, bars, marks = _bars_and_marks(render_html(report))
    assert marks == []  # no line for a limit off the axis...
    assert "max length 2048 \u2192" in svg and "context window 8192 \u2192" in svg  # ...but both are named
    assert ">2000<" not in svg and ">8000<" not in svg  # tick labels stay within the data
    plot_left, plot_right = bars[0][0], bars[-1][0] + bars[-1][1]
    assert plot_right - plot_left > 0.8 * (720 - 56 - 16)  # the bars use most of the plot's width


def test_percentiles_are_rounded_for_display():
    import numpy as np

    from tuneforge.data.audit import _stats

    # Interpolating between these integers gives float noise (e.g. 12345.550000000001) without rounding.
    values = np.array([12000, 12345, 12346, 11000, 5000, 100, 12344, 12344, 1, 7])
    stats = _stats(values)
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert stats[key] == round(float(np.percentile(values, q)), 1)
        assert str(stats[key]) == f"{stats[key]:.1f}"


def test_label_field_is_found_like_split_finds_it(tmp_path):
    import pytest

    from tuneforge.errors import DataError

    path = write(tmp_path, "c.jsonl", [chat(f"q{k}", f"a{k}", category="ab"[k % 2]) for k in range(5)])
    report = run_audit(AuditInputs(train=path, label_field="category"))
    assert report["label_balance"]["field"] == "meta.category"
    assert report["label_balance"]["counts"] == {"a": 3, "b": 2}
    with pytest.raises(DataError) as err:
        run_audit(AuditInputs(train=path, label_field="categry"))
    assert "'categry'" in err.value.message and "meta.category" in err.value.hint
