"""Forgetting: a small general-ability set answered by the base and the tuned model; the delta, with its paired
interval, shows whether fine-tuning cost general ability. The shipped set and its provenance:
assets/general/README.md. Results are `general_accuracy` in the summary, in slice `general`, and (with a base)
in `comparison`, so `general_accuracy delta_vs_base >= -2pp` gates a release.

Scoring (`score_general`): chat models answer in sentences, so a reply is right when the SQuAD-normalised answer
appears in it as whole words (`contains_answer`) - unless the reply gives itself away as answering something
else, because the answer's words alone do not make an answer:

* it names one of the row's `wrong` answers (the distractors of a choice question, whose answer is in the
  question itself, so an echo of the question would otherwise count: "Wednesday, not Sunday");
* it restates the question's "X of Y" with the answer in Y's place and Y afterwards ("The plural of mice is
  mouse", "The opposite of cold is hot");
* it puts Y under a contrasting relation ("The singular of mouse is mice", "The present tense of go is went").
The last two apply only when the reply never states the question's own "X of Y" ("The opposite of hot is cold,
and the opposite of cold is hot" is right).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from tuneforge.errors import DataError
from tuneforge.eval.tasks import TaskSpec, items_from_task
from tuneforge.eval.text_metrics import normalize_text

METRIC = "general_accuracy"
PROMPT = "Answer the question with a single word or number.\n\nQuestion: {question}"

# Relation words of the question types in the set, and the relations a confused reply swaps them for.
_CONTRASTS = {
    "plural": ("singular",), "singular": ("plural",), "past": ("present", "future"), "opposite": ("synonym",),
    "largest": ("smallest",), "smallest": ("largest",), "longest": ("shortest",), "shortest": ("longest",),
    "closest": ("farthest", "furthest"), "first": ("last",), "last": ("first",),
}


def shipped_general_path() -> Path:
    return Path(str(resources.files("tuneforge") / "assets" / "general" / "general.jsonl"))


def general_items(path: str | Path | None = None) -> list[dict]:
    """Items of a general set (rows with id, category, question, answer and optional `wrong`: a list of wrong
    answers), ids prefixed `general:`; each item also carries its `question` and `wrong` for `score_general`."""
    from tuneforge.data.formats import read_objects

    path = Path(path) if path else shipped_general_path()
    spec = TaskSpec(name="general", data=path.name, prompt=PROMPT, reference="answer",
                    metrics=["contains_answer"], slice_field="category")
    items = items_from_task(spec, path)
    for item, (lineno, row) in zip(items, read_objects(path, str(path))):
        wrong = row.get("wrong", [])
        if not isinstance(wrong, list) or not all(isinstance(w, str) and normalize_text(w) for w in wrong):
            raise DataError(f"{path}:{lineno}: field 'wrong' must be a list of non-empty answers")
        if normalize_text(item["reference"]) in {normalize_text(w) for w in wrong}:
            raise DataError(f"{path}:{lineno}: field 'wrong' contains the answer {item['reference']!r}")
        item.update(id=f"general:{item['id']}", question=str(row["question"]), wrong=wrong)
    return items


def _positions(tokens: list[str], sub: list[str]) -> list[int]:
    n = len(sub)
    return [i for i in range(len(tokens) - n + 1) if tokens[i:i + n] == sub] if n else []


def score_general(item: dict, reply: str) -> float:
    """1.0 when the reply gives the item's answer and does not give itself away as wrong (module docstring)."""
    answer = normalize_text(item["reference"]).split()
    tokens = normalize_text(reply).split()
    if not _positions(tokens, answer):
        return 0.0
    if any(_positions(tokens, normalize_text(w).split()) for w in item.get("wrong", ())):
        return 0.0
    question = normalize_text(item.get("question", "")).split()
    for i in range(1, len(question) - 1):
        if question[i] != "of":
            continue
        relation, subject = question[i - 1], question[i + 1]
        contrasts = {c for word in question[:i] for c in _CONTRASTS.get(word, ()) if c not in question}
        if any(p == 0 or tokens[p - 1] not in contrasts for p in _positions(tokens, [relation, "of", subject])):
            continue  # the reply states the question's own relation: any other mention is elaboration
        for start in _positions(tokens, [relation, "of", *answer]):
            if subject in tokens[start + 2 + len(answer):]:
                return 0.0  # "the plural of mice is mouse": answer and subject swapped
        for j in (j for j, token in enumerate(tokens) if token in contrasts):
            after = tokens[j + 1:j + 4]  # "singular of mouse" or "present tense of go"
            if after[:2] == ["of", subject] or after[1:3] == ["of", subject]:
                return 0.0  # "the singular of mouse is mice": the subject under another relation
    return 1.0
