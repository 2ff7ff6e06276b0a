"""Curriculum learning: train on the rows easy -> hard by a difficulty measure instead of in shuffled order.

    data: {train: train.jsonl, order: curriculum, difficulty: base_loss}     # tuneforge train run.yaml

The rendered training rows are put in curriculum order before the trainer is built, and the trainer reads them
with transformers' documented `train_sampling_strategy="sequential"` (a SequentialSampler; no sampler override).
Each epoch repeats the same order.

The order is written to RUN/data_order.json (every row's index, id, file:line and difficulty score, in training
order). A resumed run reads that file back instead of scoring again, so the resumed trainer sees exactly the order
the interrupted one did (the Trainer then skips the batches already trained) even where a fresh scoring pass could
differ (another machine or thread count reordering near-ties of base_loss), and the pass is not paid twice.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from tuneforge.errors import DataError

ORDER_FILE = "data_order.json"


def difficulty_scores(measure: str, rendered: list[dict], loaded, model=None, *, batch_size: int = 8,
                      progress: bool = True) -> list[float]:
    """One score per training row (higher = harder) under `measure`: length | base_loss | field:NAME."""
    if measure == "length":
        return [float(len(row["input_ids"])) for row in rendered]
    if measure == "base_loss":
        return base_losses(model, rendered, batch_size=batch_size, progress=progress)
    if measure.startswith("field:"):
        return field_scores(loaded, measure[len("field:"):].strip())
    raise DataError(f"data.difficulty: unknown measure {measure!r}", hint="use length, base_loss or field:NAME")


def base_losses(model, rendered: list[dict], *, batch_size: int = 8, progress: bool = True) -> list[float]:
    """The model's mean cross-entropy per trained token of each row: the per-row form of the training loss
    (the same masked scorer as eval loss, `masked_token_logps`), in one batched, no-grad pass."""
    from tuneforge.console import make_progress
    from tuneforge.models.inference import masked_token_logps

    rows = [(row["input_ids"], row["assistant_masks"]) for row in rendered]
    with make_progress(progress) as bar:
        task = bar.add_task("curriculum: base model loss per example", total=len(rows))
        scored = masked_token_logps(model, rows, batch_size, progress=(bar, task))
    return [-logp / count if count else math.inf for logp, count in scored]


def field_scores(loaded, name: str) -> list[float]:
    from tuneforge.data.split import _MISSING, get_field, resolve_field

    path = resolve_field(loaded.rows, name, "data.difficulty")
    scores, problems = [], []
    for i, row in enumerate(loaded.rows):
        value = get_field(row, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            shown = "missing" if value is _MISSING else f"{value!r} is not a (finite) number"
            problems.append(f"{loaded.where(i)}: {path}: {shown}")
            scores.append(math.nan)
        else:
            scores.append(float(value))
    if problems:
        listed = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise DataError(f"{len(problems)} training row(s) have no numeric difficulty:\n  " + "\n  ".join(listed),
                        hint=f"give every row a number in {path!r}, or use data.difficulty length or base_loss")
    return scores


def curriculum_order(scores: list[float], direction: str = "easy_first") -> list[int]:
    """Row indices sorted by score (ascending for easy_first); ties keep file order in both directions."""
    sign = 1.0 if direction == "easy_first" else -1.0
    return sorted(range(len(scores)), key=lambda i: (sign * scores[i], i))


def row_id(loaded, index: int) -> str:
    meta = loaded.rows[index].get("meta") or {}
    return str(meta["id"]) if meta.get("id") is not None else loaded.where(index)


def order_record(data_cfg, loaded, scores: list[float], order: list[int]) -> dict:
    return {"order": "curriculum", "difficulty": data_cfg.difficulty, "direction": data_cfg.difficulty_order,
            "train": {"path": str(loaded.path), "sha256": loaded.sha256, "rows": len(loaded.rows)},
            "rows": [{"position": pos, "index": i, "id": row_id(loaded, i), "where": loaded.where(i),
                      "difficulty": None if math.isinf(scores[i]) else round(scores[i], 6)}
                     for pos, i in enumerate(order)]}


def _recorded_order(path: Path, data_cfg, loaded) -> list[int] | None:
    """The order an earlier attempt of this run used, when it was made for the same data and measure."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    same = (record.get("difficulty") == data_cfg.difficulty and record.get("direction") == data_cfg.difficulty_order
            and record.get("train", {}).get("sha256") == loaded.sha256)
    if not same:
        raise DataError(f"{path}: recorded for other data or another difficulty measure than this run's config",
                        hint="resume with the configuration the run started with, or start a new run")
    return [row["index"] for row in record["rows"]]


def apply_curriculum(run_path: Path, data_cfg, prepared, model, *, batch_size: int, write: bool, console) -> dict:
    """Put `prepared.rendered["train"]` in curriculum order (the loaded split keeps file order: data_order.json maps
    positions to rows); returns the manifest entry."""
    from tuneforge.atomic import write_json_atomic

    loaded, rendered = prepared.splits["train"], prepared.rendered["train"]
    path = Path(run_path) / ORDER_FILE
    order = _recorded_order(path, data_cfg, loaded)
    reused = order is not None
    if order is None:
        scores = difficulty_scores(data_cfg.difficulty, rendered, loaded, model, batch_size=batch_size)
        order = curriculum_order(scores, data_cfg.difficulty_order)
        if write:
            write_json_atomic(path, order_record(data_cfg, loaded, scores, order))
    prepared.rendered["train"] = [rendered[i] for i in order]
    console.print(f"[bold]curriculum[/] {len(order)} rows {data_cfg.difficulty_order.replace('_', ' ')} by "
                  f"{data_cfg.difficulty}" + (" (order of the interrupted run, from " + ORDER_FILE + ")"
                                              if reused else f" -> {ORDER_FILE}"))
    return {"order": "curriculum", "difficulty": data_cfg.difficulty, "direction": data_cfg.difficulty_order,
            "file": ORDER_FILE, "rows": len(order), "reused": reused}
