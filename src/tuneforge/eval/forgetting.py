"""Forgetting: a small general-ability set answered by the base and the tuned model; the delta, with its paired
interval, shows whether fine-tuning cost general ability. The shipped set and its provenance:
assets/general/README.md. Results are `general_accuracy` in the summary, in slice `general`, and (with a base)
in `comparison`, so `general_accuracy delta_vs_base >= -2pp` gates a release.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from tuneforge.eval.tasks import TaskSpec, items_from_task

METRIC = "general_accuracy"
PROMPT = "Answer the question with a single word or number.\n\nQuestion: {question}"


def shipped_general_path() -> Path:
    return Path(str(resources.files("tuneforge") / "assets" / "general" / "general.jsonl"))


def general_items(path: str | Path | None = None) -> list[dict]:
    """Items of a general set (rows with id, category, question, answer), ids prefixed `general:`."""
    path = Path(path) if path else shipped_general_path()
    spec = TaskSpec(name="general", data=path.name, prompt=PROMPT, reference="answer",
                    metrics=["contains_answer"], slice_field="category")
    items = items_from_task(spec, path)
    for item in items:
        item["id"] = f"general:{item['id']}"
    return items
