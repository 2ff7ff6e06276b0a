"""The eval report's fairness and human-evaluation sections: per-cohort metrics with intervals (a chart per metric, a
bar per cohort and model), the counterfactual flip rates with examples, and raters' win rates (results["human"]).
Model output is HTML-escaped."""
from __future__ import annotations

from html import escape

from tuneforge.report.charts import PALETTE, IntervalSeries, interval_chart
from tuneforge.report.html import fmt, note, section, table

_COLORS = {"tuned": PALETTE[0], "base": "#9ca3af"}


def _ci(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{fmt(entry['mean'])} [{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]"


def cohorts_section(results: dict) -> str:
    sides = {name: side["cohorts"] for name, side in results["models"].items() if side.get("cohorts")}
    if not sides:
        return ""
    first = next(iter(sides.values()))
    names = sorted({c for block in sides.values() for c in block["cohorts"]})
    metrics = list(dict.fromkeys(m for block in sides.values() for entry in block["cohorts"].values()
                                 for m in entry if m != "item_count"))
    parts = [f"<p>cohort field <code>{escape(str(first.get('field')))}</code>: each metric's mean per cohort with "
             f"its {first.get('confidence', 0.95):.0%} bootstrap interval; the gap is the highest cohort mean minus "
             "the lowest (gate <code>cohort_gap:METRIC</code>), its interval from resampling within each cohort. "
             "A gap whose interval reaches 0 is not shown to exist.</p>"]
    for metric in metrics:
        series = [IntervalSeries(side, [tuple(block["cohorts"].get(c, {}).get(metric, {}).get(k, float("nan"))
                                              for k in ("mean", "ci_low", "ci_high")) for c in names],
                                 _COLORS.get(side, PALETTE[2])) for side, block in sides.items()]
        parts.append(interval_chart(names, series, title=f"{metric} by cohort (whisker: 95% CI)"))
    rows = [[escape(side), escape(c), str(block["cohorts"][c]["item_count"])]
            + [_ci(block["cohorts"][c].get(m)) for m in metrics]
            for side, block in sides.items() for c in names if c in block["cohorts"]]
    parts.append(table(["model", "cohort", "items", *map(escape, metrics)], rows, numeric={2}))
    gap_rows = [[escape(side), escape(m), f"{g['gap']:.4f}", f"[{g['ci_low']:.4f}, {g['ci_high']:.4f}]",
                 escape(str(g["highest"])), escape(str(g["lowest"]))]
                for side, block in sides.items() for m, g in (block.get("gaps") or {}).items()]
    if gap_rows:
        parts.append("<h3>Largest gap between cohorts</h3>" + table(
            ["model", "metric", "gap", "95% CI", "highest", "lowest"], gap_rows, numeric={2}))
    return section("Fairness: cohorts", "".join(parts), "cohorts")


def counterfactual_section(results: dict) -> str:
    sides = {name: side["counterfactual"] for name, side in results["models"].items() if side.get("counterfactual")}
    if not sides:
        return ""
    first = next(iter(sides.values()))
    parts = [f"<p>swap list <code>{escape(str(first['swaps']))}</code> ({first['n_pairs']} pairs): each item whose "
             "prompt holds a listed term was asked again with the terms swapped. An answer <b>changed</b> when it "
             "differs from the original answer both as is and with the same swaps applied (gate "
             "<code>counterfactual_flip_rate</code>).</p>"]
    rows = [[escape(side), str(b["n_items"]), str(b["n_applicable"]), str(b["n_changed"]), _ci(b["flip_rate"])]
            for side, b in sides.items()]
    parts.append(table(["model", "items", "with a swap", "changed", "flip rate [95% CI]"], rows, numeric={1, 2, 3}))
    comp = (results.get("comparison") or {}).get("counterfactual_flip_rate")
    if comp:
        parts.append(f"<p>tuned minus base flip rate: {comp['delta']:+.4f} [{comp['ci_low']:+.4f}, "
                     f"{comp['ci_high']:+.4f}] over {comp['n']} items both models had.</p>")
    pair_rows = [[escape(side), escape(pair), str(e["n"]), _ci(e)] for side, b in sides.items()
                 for pair, e in b["pairs"].items()]
    if pair_rows:
        parts.append("<h3>Per swap pair</h3>" + table(["model", "pair", "items", "flip rate [95% CI]"], pair_rows,
                                                     numeric={2}))
    change_rows = [[escape(side), escape(m), fmt(c["mean_a"]), fmt(c["mean_b"]), f"{c['delta']:+.4f}",
                    f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"] for side, b in sides.items()
                   for m, c in b["score_change"].items()]
    if change_rows:
        parts.append("<h3>Score on the swapped items</h3>" + table(
            ["model", "metric", "original", "swapped", "delta", "95% CI"], change_rows, numeric={2, 3, 4}))
    examples = [[escape(side), escape(str(e["id"])), f"<pre>{escape(e['counterfactual_prompt_text'])}</pre>",
                 f"<pre>{escape(str(e['prediction']))}</pre>", f"<pre>{escape(str(e['counterfactual_prediction']))}"
                 "</pre>"] for side, b in sides.items() for e in b["examples"]]
    if examples:
        parts.append("<h3>Examples of changed answers</h3>" + table(
            ["model", "item", "swapped prompt", "answer", "answer to the swapped prompt"], examples))
    if any(b["flip_rate"] is None for b in sides.values()):
        parts.append(note("no item's prompt holds a term of the swap list; there is no flip rate"))
    return section("Fairness: counterfactual", "".join(parts), "counterfactual")


def human_section(results: dict) -> str:
    human = results.get("human")
    if not human:
        return ""
    win, tie = human["win_rate"], human["tie_rate"]
    body = (f"<p>{len(human['raters'])} rater(s), {human['n_items']} items, {human['n_judgements']} blinded pairwise "
            f"judgements. Tuned win rate <b>{win['mean']:.3f}</b> [{win['ci_low']:.3f}, {win['ci_high']:.3f}] "
            f"(a tie counts half; 95% bootstrap over items), tie rate {tie['mean']:.3f} [{tie['ci_low']:.3f}, "
            f"{tie['ci_high']:.3f}].</p>")
    body += table(["rater", "items", "tuned better", "base better", "tie", "win rate"],
                  [[escape(r), str(v["n"]), str(v["tuned"]), str(v["base"]), str(v["tie"]), fmt(v["win_rate"])]
                   for r, v in human["per_rater"].items()], numeric={1, 2, 3, 4, 5})
    agreement = human.get("agreement")
    if agreement:
        rows = [["items every rater rated", str(agreement["n_items"])],
                ["Fleiss' kappa", fmt(agreement.get("fleiss_kappa"))],
                ["all raters agree", fmt(agreement.get("all_agree"))]]
        if "cohen_kappa" in agreement:
            rows.append(["Cohen's kappa", fmt(agreement.get("cohen_kappa"))])
        body += "<h3>Inter-rater agreement (tuned / base / tie)</h3>" + table(["measure", "value"], rows, numeric={1})
    return section("Human evaluation", body, "human")
