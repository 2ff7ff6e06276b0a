"""Blinded pairwise comparison sheets of base vs tuned answers, for people to rate.

`tuneforge eval RESULTS_OR_RUN --human-sheet OUT_DIR --n 50 --seed 0` samples task items that both models answered
and writes into OUT_DIR (a new or empty folder, written whole or not at all):

* ``sheet.csv``: item_id, prompt, answer_a, answer_b, choice (empty: the rater writes A, B or tie);
* ``form.html``: the same items as a self-contained form (radio buttons A / B / tie, a button that downloads the
  choices as ``item_id,choice`` CSV; no server, nothing leaves the browser);
* ``key.json``: which model is A and which is B for each item. Keep it from the raters.

Which model is A is drawn per item (seeded): exactly half of the items, rounded down, show the tuned answer as A,
in random positions, so neither position carries a model and a rater's position bias cancels out across items.
Every rater gets the same sheet, so their choices on an item are comparable.
"""
from __future__ import annotations

import csv
import io
import json
import random
from html import escape
from pathlib import Path

from tuneforge.errors import ConfigError

SIDES = ("tuned", "base")


def find_results(text: str, runs_dir: Path = Path("runs")) -> Path:
    """results.json from a file, an eval output folder, a run folder or a run name."""
    candidates = [Path(text)]
    if not Path(text).exists():
        candidates.append(runs_dir / text)
    for path in candidates:
        if path.is_file():
            return path
        for inner in ("results.json", "eval/results.json", "eval/standalone/results.json"):
            if (path / inner).is_file():
                return path / inner
    raise ConfigError(f"no results.json at {text}", hint="pass a results.json, the --out folder of `tuneforge eval` "
                      "or a run (its eval/results.json)")


def pairable_items(results: dict) -> list[dict]:
    """Task items both models answered (probes and the general set are not for pairwise rating)."""
    return [row for row in results["items"] if not str(row["id"]).startswith(("probe:", "general:"))
            and all(isinstance(row.get(side), dict) and "prediction" in row[side] for side in SIDES)]


def build_sheet(results: dict, n: int, seed: int) -> tuple[list[dict], dict]:
    """(sheet rows in presentation order, key) for `n` sampled items."""
    if "base" not in results["models"]:
        raise ConfigError("the results hold one model; a pairwise sheet needs base and tuned answers",
                          hint="run `tuneforge eval MODEL --base BASE ...` first")
    pool = pairable_items(results)
    if not pool:
        raise ConfigError("no task item has both a tuned and a base answer to compare")
    if n < 1:
        raise ConfigError(f"--n {n}: sample at least one item")
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(n, len(pool)))
    tuned_first = [True] * (len(chosen) // 2) + [False] * (len(chosen) - len(chosen) // 2)
    rng.shuffle(tuned_first)
    rows, assignment = [], {}
    for row, first in zip(chosen, tuned_first):
        a, b = ("tuned", "base") if first else ("base", "tuned")
        rows.append({"item_id": str(row["id"]), "prompt": str(row.get("prompt_text", "")),
                     "answer_a": str(row[a]["prediction"]), "answer_b": str(row[b]["prediction"]), "choice": ""})
        assignment[str(row["id"])] = {"A": a, "B": b}
    key = {"format": "tuneforge human sheet key 1", "seed": seed, "n": len(rows), "items": assignment,
           "sources": {side: results["models"][side].get("source") for side in SIDES}, "task": results.get("task")}
    return rows, key


def sheet_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["item_id", "prompt", "answer_a", "answer_b", "choice"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


_FORM_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:0 auto;padding:16px;color:#111827}
.item{border:1px solid #e5e7eb;border-radius:8px;padding:12px;margin:14px 0}.pair{display:flex;gap:12px}
.pair>div{flex:1}pre{background:#f3f4f6;padding:8px;border-radius:6px;white-space:pre-wrap;word-break:break-word}
label{margin-right:18px}#bar{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #e5e7eb}"""

# Builds `item_id,choice` CSV from the checked radio buttons; quotes every field (ids may hold commas or quotes).
_FORM_JS = """function q(s){return '"'+String(s).replace(/"/g,'""')+'"';}
function save(){var rows=['item_id,choice'],missing=0;
document.querySelectorAll('.item').forEach(function(el){var c=el.querySelector('input:checked');
if(c){rows.push(q(el.dataset.id)+','+c.value);}else{missing++;}});
if(missing&&!confirm(missing+' item(s) have no choice and will be left out. Download anyway?')){return;}
var who=(document.getElementById('rater').value||'rater').replace(/[^A-Za-z0-9_-]/g,'_');
var a=document.createElement('a');a.href=URL.createObjectURL(new Blob([rows.join('\\n')+'\\n'],{type:'text/csv'}));
a.download='choices-'+who+'.csv';document.body.appendChild(a);a.click();a.remove();}"""


def sheet_html(rows: list[dict], title: str) -> str:
    blocks = []
    for k, row in enumerate(rows):
        radios = "".join(f'<label><input type="radio" name="c{k}" value="{v}"> {text}</label>'
                         for v, text in (("A", "A is better"), ("B", "B is better"), ("tie", "tie")))
        blocks.append(f'<div class="item" data-id="{escape(row["item_id"], quote=True)}"><h3>{k + 1}. item '
                      f'{escape(row["item_id"])}</h3><pre>{escape(row["prompt"])}</pre><div class="pair">'
                      f'<div><b>A</b><pre>{escape(row["answer_a"])}</pre></div>'
                      f'<div><b>B</b><pre>{escape(row["answer_b"])}</pre></div></div>{radios}</div>')
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_FORM_CSS}</style></head><body><h1>{escape(title)}</h1>"
            "<p>For each prompt, choose the better answer, or tie when neither is better. The two answers come "
            "from two models in a random order per item. When done, type your name and download your choices; "
            "send the file back. Nothing is sent anywhere by this page.</p>"
            '<div id="bar"><label>your name <input id="rater"></label>'
            '<button type="button" onclick="save()">download choices (CSV)</button></div>'
            + "".join(blocks) + f"<script>{_FORM_JS}</script></body></html>")


def write_human_sheet(results_path: Path, out_dir: Path, n: int = 50, seed: int = 0) -> dict:
    """Write sheet.csv, form.html and key.json into `out_dir` (new or empty); returns the key."""
    from tuneforge.atomic import atomic_dir
    from tuneforge.eval.pipeline import read_results

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"--human-sheet {out_dir}: exists and is not an empty folder",
                          hint="choose a new folder; a sheet's key must match the sheets raters already have")
    results = read_results(results_path, items=True)
    rows, key = build_sheet(results, n, seed)
    key["results"] = str(results_path)
    with atomic_dir(out_dir) as tmp:
        (tmp / "sheet.csv").write_text(sheet_csv(rows), encoding="utf-8")
        (tmp / "form.html").write_text(sheet_html(rows, f"Which answer is better? ({results.get('task')}, "
                                                        f"{len(rows)} items)"), encoding="utf-8")
        (tmp / "key.json").write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")
    return key
