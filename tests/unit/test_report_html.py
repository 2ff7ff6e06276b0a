"""The HTML run report: content from every input, escaping, and survival of missing or broken inputs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tuneforge.report.charts import MetricBars, Series, comparison_chart, line_chart, nice_ticks
from tuneforge.report.html import write_report

CONFIG = "run_name: demo-run\nmodel:\n  source: tiny\ntraining:\n  learning_rate: 0.0002  # <tuned>\n"


def _comparison(metric, mean_a, mean_b, low, high, p):
    return {"metric": metric, "n": 12, "mean_a": mean_a, "mean_b": mean_b, "delta": mean_b - mean_a,
            "ci_low": low, "ci_high": high, "confidence": 0.95, "p_value": p}


def _items() -> list[dict]:
    items = []
    for index in range(12):  # twelve gains: only the ten largest may be shown
        items.append({"id": f"gain-{index:02d}", "prompt_text": f"prompt {index}", "reference": '{"k": 1}',
                      "base": {"prediction": "nope", "scores": {"json_fields": 0.0, "exact_match": 0.0}},
                      "tuned": {"prediction": '{"k": 1}', "scores": {"json_fields": (index + 1) / 12,
                                                                      "exact_match": 1.0}}})
    items.append({"id": "regress-1", "prompt_text": "Q & A?", "reference": '{"k": 2}',
                  "base": {"prediction": '{"k": 2}', "scores": {"json_fields": 1.0, "exact_match": 1.0}},
                  "tuned": {"prediction": "<script>alert(1)</script>", "scores": {"json_fields": 0.0,
                                                                                  "exact_match": 0.0}}})
    items.append({"id": "same", "prompt_text": "p", "reference": "r",
                  "base": {"prediction": "x", "scores": {"json_fields": 0.5, "exact_match": 0.0}},
                  "tuned": {"prediction": "x", "scores": {"json_fields": 0.5, "exact_match": 0.0}}})
    return items


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "demo-run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(CONFIG)
    manifest = {
        "run_name": "demo-run", "tuneforge_version": "0.1.0", "git_commit": "abc1234", "seed": 42,
        "started_at": "2026-11-22T10:00:00Z", "finished_at": "2026-11-22T10:05:00Z",
        "base_model": {"source": "local", "kind": "folder", "path": "/models/SmolLM2-135M", "weights_sha256": "f00d"},
        "datasets": {"train": {"path": "data/train.jsonl", "sha256": "beef" * 16, "rows": 480}},
        "packages": {"torch": "2.13.0", "transformers": "5.23.0"}, "hardware": {"cpu_count": 2, "gpu": None},
        "training": {"steps": 40, "timings": {"train_s": 251.5}}, "exports": {"adapter": "adapter", "merged": None},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = [{"step": s, "epoch": s / 40, "loss": 3.0 - 0.05 * s, "learning_rate": 1e-4, "tokens_per_second": 120.0,
              "elapsed_s": 0.5 * s} for s in range(1, 41)]
    lines += [{"step": 20, "eval_loss": 2.1}, {"step": 40, "eval_loss": 1.7}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    results = {
        "headline_metric": "json_fields", "metrics": ["json_fields", "exact_match"], "n_items": 14,
        "models": {
            "base": {"summary": {"json_fields": 0.1786, "exact_match": 0.0714},
                     "eval_loss": {"loss": 2.5, "perplexity": 12.18, "tokens": 900}, "seconds": 30.0,
                     "items_per_second": 0.47},
            "tuned": {"summary": {"json_fields": 0.5, "exact_match": 0.8571}, "eval_loss": None, "seconds": 28.0,
                      "items_per_second": 0.5},
        },
        "comparison": {"json_fields": _comparison("json_fields", 0.1786, 0.5, 0.1234, 0.5432, 0.0021),
                       "exact_match": _comparison("exact_match", 0.0714, 0.8571, 0.5, 0.95, 0.0001)},
        "items": _items(),
    }
    (run / "eval" / "results.json").write_text(json.dumps(results))
    return run


def test_full_report_contains_every_section(run_dir: Path):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "tuneforge run: demo-run" in html and "/models/SmolLM2-135M" in html
    # comparison table: means, signed delta, interval and p
    for value in ("0.1786", "0.5000", "+0.3214", "[+0.1234, +0.5432] (95%)", "0.0021", "0.8571", "+0.7857"):
        assert value in html
    # model table: eval loss for base, n/a for the tuned model that has none
    assert "2.5000" in html and "12.18" in html
    assert html.count("<svg") == 2  # comparison bars + loss curves
    # lineage and config
    assert "abc1234" in html and "beef" * 16 in html and "480" in html and "transformers" in html
    assert "learning_rate: 0.0002  # &lt;tuned&gt;" in html
    assert "best eval loss" in html and "1.7000 at step 40" in html
    assert 'class="note"' not in html
    # nested manifest objects read as dotted fields, not inline JSON
    assert "<td>training.timings.train_s</td><td>251.5000</td>" in html and "<td>exports.merged</td>" in html
    assert "{&quot;steps&quot;" not in html


def test_predictions_are_escaped(run_dir: Path):
    html = write_report(run_dir).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Q &amp; A?" in html


def test_items_that_differ_most_each_way(run_dir: Path):
    html = write_report(run_dir).read_text()
    gains = html.split("Largest gains")[1].split("Largest regressions")[0]
    shown = re.findall(r"gain-\d\d", gains)
    # the ten largest gains, largest first; the two smallest and the unchanged item are left out
    assert shown == [f"gain-{i:02d}" for i in range(11, 1, -1)]
    regressions = html.split("Largest regressions")[1].split("Failures:")[0]
    assert "regress-1" in regressions and "gain-" not in regressions and ">same<" not in regressions


def test_self_contained(run_dir: Path):
    html = write_report(run_dir).read_text()
    assert "<link" not in html and "src=" not in html and "@import" not in html
    assert "https://" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_empty_run_dir_reports_what_is_missing(tmp_path: Path):
    run = tmp_path / "bare"
    run.mkdir()
    html = write_report(run).read_text()
    for name in ("results.json not found", "metrics.jsonl not found", "manifest.json not found",
                 "config.yaml not found"):
        assert name in html
    assert "tuneforge run: bare" in html


def test_broken_inputs_are_reported_not_fatal(run_dir: Path):
    (run_dir / "manifest.json").write_text("{not json")
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 41, "loss": 0.9')  # torn last line of a killed run
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    del results["comparison"]
    results["models"].pop("tuned")
    (run_dir / "eval" / "results.json").write_text(json.dumps(results))
    html = write_report(run_dir).read_text()
    assert "manifest.json is not valid JSON" in html
    assert "1 line(s) of metrics.jsonl could not be parsed" in html
    assert "n/a (no comparison)" in html and "not evaluated" in html
    assert html.count("<svg") == 1  # the loss curves still render
    with pytest.raises(FileNotFoundError):
        write_report(run_dir / "absent")


def test_nice_ticks_hand_worked():
    assert nice_ticks(0, 1, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.13, 2.71, 5) == [0.0, 1.0, 2.0, 3.0]
    assert nice_ticks(1, 40, 8) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]
    assert nice_ticks(2.0, 2.0) == pytest.approx([1.8, 1.9, 2.0, 2.1, 2.2])


def test_charts_escape_labels_and_skip_non_finite_points():
    svg = line_chart([Series("a<b", [(0, 1.0), (1, float("nan")), (2, 0.5)])], title="t&t", x_label="x",
                     y_label="y")
    assert "a&lt;b" in svg and "t&amp;t" in svg and "nan" not in svg
    assert svg.count("<polyline") == 1 and len(re.search(r'points="([^"]+)"', svg).group(1).split()) == 2
    assert "no data" in line_chart([Series("empty", [])], title="t", x_label="x", y_label="y")
    bars = comparison_chart([MetricBars("m", 0.2, 0.6, 0.1, 0.7)], title="c")
    assert "delta interval: [+0.1000, +0.7000]" in bars and bars.count("<rect") >= 2


def test_comparison_whiskers_are_clipped_to_a_bounded_metric_axis():
    # base + ci_high = 1.05 lies outside [0, 1]: the axis stays 0..1 and the whisker ends at its top.
    svg = comparison_chart([MetricBars("m", 0.1, 0.9, 0.5, 0.95)], title="c")
    tick_labels = re.findall(r'text-anchor="end"[^>]*>([^<]*)<', svg)
    assert tick_labels == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
    whisker = re.search(r'<g stroke="#111827"[^>]*><line x1="[\d.]+" y1="([\d.]+)" x2="[\d.]+" y2="([\d.]+)"', svg)
    assert float(whisker.group(2)) == 48.0  # the plot area's top edge (value 1.0)
    assert 48.0 < float(whisker.group(1)) < 296.0
