"""The four-way HTML report (base / tuned / base+RAG / tuned+RAG): table, chart, paired CIs, per-item answers.
Built from the results document alone; everything from data or models is HTML-escaped."""
from __future__ import annotations

from html import escape
from pathlib import Path

from tuneforge.report.charts import PALETTE, IntervalSeries, interval_chart
from tuneforge.report.html import CSS, fmt, section, table

MAX_ITEMS = 40


def render_fourway_report(results: dict) -> str:
    from tuneforge.rag.fourway import table_rows

    systems = results["systems"]
    header, rows = table_rows(results)
    metrics = [r[0] for r in rows]
    series = [IntervalSeries(system, [None if (v := results["models"][system]["summary"].get(m)) is None
                                      else (v, None, None) for m in metrics], PALETTE[k % len(PALETTE)])
              for k, system in enumerate(systems)]
    body = table(header, [[escape(c) for c in r] for r in rows], numeric=set(range(1, len(header))))
    body += interval_chart(metrics, series, title=f"{results['n_items']} questions, k={results['k']}")
    parts = [section("Systems and metrics", body, "systems")]
    comp_rows = []
    for pair, comparison in results["comparisons"].items():
        for metric, c in comparison.items():
            comp_rows.append([escape(pair), escape(metric), fmt(c["mean_a"]), fmt(c["mean_b"]), f"{c['delta']:+.4f}",
                              f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]", escape(str(c.get("test", "-"))),
                              fmt(c.get("test_p_value")), str(c["n"])])
    parts.append(section("Paired differences (95% bootstrap CI of B - A)", table(
        ["B vs A", "metric", "A", "B", "delta", "95% CI", "test", "p", "n"], comp_rows, numeric={2, 3, 4, 7, 8}),
        "comparisons"))
    item_rows = [[escape(i["id"]), escape(i["question"]), escape(i["reference"]),
                  *[escape(i[s]["prediction"][:300]) for s in systems]] for i in results["items"][:MAX_ITEMS]]
    parts.append(section("Answers", table(["id", "question", "reference", *systems], item_rows), "items"))
    title = "tuneforge rag eval: base vs tuned, with and without retrieval"
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{escape(title)}</h1>"
            f"<p>{results['n_items']} questions; answer metrics from the registry, citation metrics ALCE "
            f"(lexical entailment)</p></header><main>{''.join(parts)}</main></body></html>")


def write_fourway(results: dict, out_dir: Path) -> tuple[Path, Path]:
    from tuneforge.atomic import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return (write_json_atomic(out_dir / "results.json", results),
            write_text_atomic(out_dir / "report.html", render_fourway_report(results)))
