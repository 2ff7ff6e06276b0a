"""Load a run's splits and render them into trainable examples, stopping on anything that would lose rows."""
from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.errors import DataError


@dataclass
class PreparedData:
    splits: dict            # split name -> LoadedData
    rendered: dict          # split name -> list of {"input_ids", "assistant_masks", "truncated"}
    stats: dict             # split name -> render stats
    template: object        # TrainingTemplate | None
    items: list = field(default_factory=list)  # test items for generation: {"id", "prompt_ids", "reference", "prompt_text"}


def load_splits(data_cfg) -> dict:
    from tuneforge.data.formats import load_dataset_file

    splits = {"train": load_dataset_file(data_cfg.train, data_cfg.format)}
    for name in ("validation", "test"):
        path = getattr(data_cfg, name)
        if path:
            splits[name] = load_dataset_file(path, data_cfg.format)
    return splits


def prepare_data(data_cfg, tokenizer, *, max_test_items: int | None = None) -> PreparedData:
    from tuneforge.data.chat_template import prepare_training_template
    from tuneforge.data.render import build_generation_prompt, render_dataset

    splits = load_splits(data_cfg)
    chat_rows, locations = [], []
    for loaded in splits.values():
        if loaded.format in ("chat", "alpaca"):
            chat_rows.extend(loaded.rows)
            locations.extend(loaded.where(i) for i in range(len(loaded.rows)))
    template = None
    if chat_rows and data_cfg.train_on == "assistant":
        # Assistant-only masks need generation markers; a derived template is proven byte-identical to the
        # tokenizer's own on every row of every split (not only train) before anything is trained.
        template = prepare_training_template(tokenizer, chat_rows, locations)

    rendered, stats = {}, {}
    for name in ("train", "validation"):
        if name not in splits:
            continue
        rows, split_stats = render_dataset(splits[name], tokenizer, template, data_cfg.max_length, data_cfg.train_on)
        empty = [splits[name].where(i) for i, row in enumerate(rows) if sum(row["assistant_masks"]) == 0]
        if empty:
            shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise DataError(
                f"{len(empty)} {name} example(s) have no trained token after rendering: {shown}",
                hint="raise data.max_length (truncation removed the answer) or fix the rows",
            )
        rendered[name], stats[name] = rows, split_stats

    items = []
    if "test" in splits:
        test = splits["test"]
        count = len(test.rows) if max_test_items is None else min(max_test_items, len(test.rows))
        for i in range(count):
            row = test.rows[i]
            prompt_ids, reference = build_generation_prompt(row, tokenizer, template)
            item_id = row.get("meta", {}).get("id", f"{test.path}:{test.line_numbers[i]}")
            items.append({
                "id": str(item_id),
                "prompt_ids": prompt_ids,
                "reference": reference,
                "prompt_text": tokenizer.decode(prompt_ids, skip_special_tokens=False),
            })
    return PreparedData(splits=splits, rendered=rendered, stats=stats, template=template, items=items)


def dataset_lineage(splits: dict) -> dict:
    return {
        name: {"path": str(loaded.path), "sha256": loaded.sha256, "rows": len(loaded.rows), "format": loaded.format}
        for name, loaded in splits.items()
    }
