"""Contamination: evaluation items that also occur in the training data, verbatim or by long shared n-grams.

Reuses the data audit's leakage check (`tuneforge.data.leakage.find_leakage`): exact overlap of the normalised
prompt, and word n-gram overlap (default n = 13, the GPT-3 report's test). A flagged item is kept in the
evaluation - dropping it silently would change the number a user compares with - but it is marked in the
results and the report, and `contamination_rate` (share of flagged items) is a gateable metric.
"""
from __future__ import annotations


def check_contamination(items: list[dict], train_path: str, *, n: int = 13) -> dict:
    from tuneforge.data.formats import load_dataset_file
    from tuneforge.data.leakage import find_leakage

    train = load_dataset_file(train_path)
    train_rows = [{k: v for k, v in row.items() if k != "meta"} for row in train.rows]
    report = find_leakage({"train": train_rows, "eval": [item["row"] for item in items]},
                          {"train": train.line_numbers, "eval": list(range(1, len(items) + 1))}, n=n)
    flagged: dict[str, dict] = {}
    for pair in report.pairs:
        item = items[pair.eval_index]
        current = flagged.get(item["id"])
        # Keep the strongest evidence per item: exact beats n-gram, then the larger shared share.
        if current is None or (pair.kind == "exact", pair.share) > (current["kind"] == "exact", current["share"]):
            flagged[item["id"]] = {"kind": pair.kind, "share": pair.share, "train_line": pair.ref_line,
                                   "where": item.get("where")}
    return {"train_data": str(train.path), "train_sha256": train.sha256, "ngram_n": n, "n_items": len(items),
            "n_flagged": len(flagged), "contamination_rate": len(flagged) / len(items) if items else 0.0,
            "items": flagged}
