"""The bundled demo corpus: the language-reference sections shipped with every Python (`pydoc_data.topics`)."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from tuneforge.atomic import write_text_atomic
from tuneforge.errors import DataError


def write_demo_corpus(out_dir: Path) -> list[Path]:
    """One .txt file per topic, named by its key (the gold key of the demo questions)."""
    from pydoc_data.topics import topics

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_text_atomic(out_dir / f"{key}.txt", text) for key, text in sorted(topics.items())]


def demo_questions_path() -> Path:
    return Path(str(resources.files("tuneforge.assets").joinpath("rag/pydoc_questions.jsonl")))


def load_questions(path: Path) -> list[dict]:
    """Question rows: {"question", "gold": [keys], "answer"}; errors name file:line."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataError(f"{path}: cannot read questions ({error.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error})") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise DataError(f"{path}:{number}: question: missing or not a non-empty string")
        gold = row.get("gold")
        if isinstance(gold, str):
            gold = [gold]
        if not isinstance(gold, list) or not gold or not all(isinstance(g, str) for g in gold):
            raise DataError(f"{path}:{number}: gold: must be a key or a non-empty list of keys (source file stems)")
        rows.append({**row, "gold": gold, "line": number})
    if not rows:
        raise DataError(f"{path}: no questions")
    return rows
