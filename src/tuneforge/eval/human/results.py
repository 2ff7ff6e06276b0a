"""Raters' choices on a blinded sheet, read back, un-blinded with the key and summarised into results.json.

`tuneforge eval RESULTS --human-results r1.csv r2.csv [--human-key SHEET/key.json]` reads each rater's file: the
filled ``sheet.csv`` or the form's download, any CSV with ``item_id`` and ``choice`` columns. A choice is ``A``,
``B`` or ``tie`` (any case); a bad choice, an item the key does not hold or an item twice is an error naming
file:line. A rater may leave items out (delete the row); a row kept with an empty choice is an error, so no
judgement is dropped unnoticed.

Summary (``results["human"]``):

* ``win_rate``: the tuned model's share of judgements, **a tie counting half** (win 1, tie 0.5, loss 0). Each
  item's score is the mean over its raters; the rate is the mean over rated items, with a bootstrap interval over
  items (ratings of one item are not independent, so items are resampled, not ratings).
* ``tie_rate``: the share of judgements that are ties, averaged the same way.
* ``agreement``: on the items every rater rated, over the categories tuned / base / tie (un-blinded): Fleiss'
  kappa for all raters, Cohen's kappa as well when there are exactly two, and the share of items where all agree.

The tuned model's summary gains ``human_win_rate``, ``human_tie_rate`` and (2+ raters) ``human_agreement``, so a
gate reads ``human_win_rate >= 0.6``.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from tuneforge.errors import ConfigError, DataError

CHOICES = {"a": "A", "b": "B", "tie": "tie"}
CATEGORIES = ("tuned", "base", "tie")
SCORE = {"tuned": 1.0, "tie": 0.5, "base": 0.0}


def load_key(path: Path) -> dict:
    try:
        key = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the sheet key {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(key, dict) or not isinstance(key.get("items"), dict):
        raise ConfigError(f"{path}: not a sheet key (written by `tuneforge eval ... --human-sheet`)")
    for item_id, sides in key["items"].items():
        if not isinstance(sides, dict) or sorted(sides.values()) != ["base", "tuned"] or sorted(sides) != ["A", "B"]:
            raise ConfigError(f"{path}: items.{item_id}: expected {{'A': tuned|base, 'B': the other}}")
    return key


def find_key(files: list[Path], explicit: Path | None) -> Path:
    if explicit is not None:
        return Path(explicit)
    for path in files:
        if (Path(path).parent / "key.json").is_file():
            return Path(path).parent / "key.json"
    raise ConfigError("no key.json beside the rating files", hint="pass --human-key SHEET_DIR/key.json")


def read_choices(path: Path, known: set[str]) -> dict[str, str]:
    """{item_id: "A" | "B" | "tie"} of one rater's file; every problem is a DataError naming file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV export may start with a BOM
    except OSError as exc:
        raise DataError(f"cannot read rating file {path}: {exc.strerror or exc}") from None
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{path}:1: empty file; expected a header with item_id and choice") from None
    except csv.Error as exc:
        raise DataError(f"{path}:1: unreadable CSV: {exc}") from None
    missing = [c for c in ("item_id", "choice") if c not in header]
    if missing:
        raise DataError(f"{path}:1: no column {', '.join(missing)} (header: {', '.join(header)})",
                        hint="a rating file is sheet.csv filled in, or the form's download (item_id,choice)")
    id_col, choice_col = header.index("item_id"), header.index("choice")
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{start}: unreadable CSV: {exc}") from None
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{line}"
        if len(row) <= max(id_col, choice_col):
            raise DataError(f"{where}: {len(row)} column(s); the header has {len(header)}")
        item_id, choice = row[id_col].strip(), row[choice_col].strip()
        if item_id not in known:
            raise DataError(f"{where}: item_id {item_id!r} is not on the sheet this key belongs to",
                            hint="rating files and --human-key must come from the same --human-sheet folder")
        if item_id in out:
            raise DataError(f"{where}: item {item_id!r} rated twice (first on line {first_line[item_id]})")
        if choice.lower() not in CHOICES:
            raise DataError(f"{where}: choice {choice!r}: write A, B or tie" + ("" if choice else
                            "; delete the row to leave the item unrated"))
        out[item_id] = CHOICES[choice.lower()]
        first_line[item_id] = line
    if not out:
        raise DataError(f"{path}: no ratings (only a header)")
    return out


def unblind(choices: dict[str, str], key: dict) -> dict[str, str]:
    """{item_id: "tuned" | "base" | "tie"}."""
    return {item: ("tie" if choice == "tie" else key["items"][item][choice]) for item, choice in choices.items()}


def summarise(judgements: dict[str, dict[str, str]], *, seed: int = 0, n_resamples: int = 10000) -> dict:
    """`judgements`: {rater: {item_id: tuned|base|tie}} -> the `human` block (module docstring)."""
    from tuneforge.data.labeling.agreement import fleiss_kappa
    from tuneforge.eval.bootstrap import bootstrap_mean
    from tuneforge.eval.judge import cohen_kappa

    raters = list(judgements)
    items = sorted({item for ratings in judgements.values() for item in ratings})
    by_item = {item: [judgements[r][item] for r in raters if item in judgements[r]] for item in items}
    scores = [sum(SCORE[v] for v in votes) / len(votes) for votes in by_item.values()]
    ties = [sum(v == "tie" for v in votes) / len(votes) for votes in by_item.values()]
    out: dict = {
        "raters": raters, "n_items": len(items), "n_judgements": sum(len(v) for v in by_item.values()),
        "ties_count": "half",
        "win_rate": bootstrap_mean(scores, seed=seed, n_resamples=n_resamples).to_dict(),
        "tie_rate": bootstrap_mean(ties, seed=seed, n_resamples=n_resamples).to_dict(),
        "per_rater": {r: {"n": len(v), **{c: sum(x == c for x in v.values()) for c in CATEGORIES},
                          "win_rate": sum(SCORE[x] for x in v.values()) / len(v)} for r, v in judgements.items()},
        "agreement": None,
    }
    if len(raters) >= 2:
        shared = [item for item in items if len(by_item[item]) == len(raters)]
        agreement: dict = {"n_items": len(shared), "fleiss_kappa": None, "all_agree": None}
        if shared:
            kappa = fleiss_kappa([[by_item[i].count(c) for c in CATEGORIES] for i in shared])
            agreement["all_agree"] = sum(len(set(by_item[i])) == 1 for i in shared) / len(shared)
            # Undefined (NaN) only when every rating is one category: the raters then agree perfectly.
            agreement["fleiss_kappa"] = 1.0 if math.isnan(kappa) else kappa
            if len(raters) == 2:
                agreement["cohen_kappa"] = cohen_kappa([judgements[raters[0]][i] for i in shared],
                                                       [judgements[raters[1]][i] for i in shared])
        out["agreement"] = agreement
    return out


def summary_metrics(block: dict) -> dict[str, float]:
    out = {"human_win_rate": block["win_rate"]["mean"], "human_tie_rate": block["tie_rate"]["mean"]}
    kappa = (block.get("agreement") or {}).get("fleiss_kappa")
    if kappa is not None:
        out["human_agreement"] = kappa
    return out


def merge_human_results(results_path: Path, files: list[Path], key_path: Path | None = None, *, seed: int = 0) -> dict:
    """Read, un-blind and summarise the rating files; write the `human` block into results.json (atomically)."""
    from tuneforge.atomic import write_json_atomic
    from tuneforge.eval.human.sheet import SIDES
    from tuneforge.eval.pipeline import read_results

    files = [Path(f) for f in files]
    if not files:
        raise ConfigError("--human-results needs at least one rating file")
    results = read_results(results_path, items=True)
    key_path = find_key(files, key_path)
    key = load_key(key_path)
    sources = {side: results["models"].get(side, {}).get("source") for side in SIDES}
    if key.get("sources") and key["sources"] != sources:
        raise ConfigError(f"{key_path}: the sheet was made from other results (models {key['sources']}, these "
                          f"results {sources})", hint="pass the results.json the --human-sheet was written from")
    names = [f.stem for f in files]
    raters = [str(f) if names.count(f.stem) > 1 else f.stem for f in files]
    if len(set(map(str, files))) != len(files):
        raise ConfigError("--human-results: the same file is given twice (one rater counted twice)")
    judgements = {rater: unblind(read_choices(f, set(key["items"])), key) for rater, f in zip(raters, files)}
    block = summarise(judgements, seed=seed)
    block |= {"files": [str(f) for f in files], "key": str(key_path), "sheet_items": len(key["items"])}
    results["human"] = block
    results["models"]["tuned"]["summary"].update(summary_metrics(block))
    if len(files) < 2:
        note = "human evaluation: one rater, so no inter-rater agreement"
        if note not in results.setdefault("notes", []):
            results["notes"].append(note)
    write_json_atomic(results_path, results)
    return results
