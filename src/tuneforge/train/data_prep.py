"""Load a run's splits and render them into trainable examples, stopping on anything that would lose rows."""
from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.errors import DataError


@dataclass
class PreparedData:
    splits: dict            # split name -> LoadedData
    rendered: dict          # split name -> [{"input_ids", "assistant_masks", "truncated"}] (eval loss reads these)
    stats: dict             # split name -> render stats ("examples", "tokens", "trained_share", "truncated", ...)
    template: object        # TrainingTemplate | None
    items: list = field(default_factory=list)  # test items (tuneforge.eval.tasks.make_item) scored by the eval pipeline
    train_dataset: object = None   # what the objective's trainer consumes, when not `rendered["train"]`
    eval_dataset: object = None
    # objective-specific (pairs for accuracy, per-task rows, mixture manifest)
    extra: dict = field(default_factory=dict)


def load_splits(data_cfg, fmt: str | None = None) -> dict:
    """Every configured split; `fmt` (the objective's own format) replaces a config format of `auto`."""
    from tuneforge.data.formats import load_dataset_file

    fmt = data_cfg.format if data_cfg.format != "auto" or fmt is None else fmt
    splits = {"train": load_dataset_file(data_cfg.train, fmt)}
    for name in ("validation", "test"):
        path = getattr(data_cfg, name)
        if path:
            splits[name] = load_dataset_file(path, fmt)
    return splits


def prepare_data(data_cfg, tokenizer, *, max_test_items: int | None = None, splits: dict | None = None) -> PreparedData:
    from tuneforge.data.chat_template import check_tool_rendering, prepare_training_template
    from tuneforge.data.formats import CHAT_FORMATS
    from tuneforge.data.render import render_dataset
    from tuneforge.eval.tasks import items_from_loaded

    splits = splits if splits is not None else load_splits(data_cfg)
    chat_rows, locations = [], []
    for loaded in splits.values():
        if loaded.format in CHAT_FORMATS:
            chat_rows.extend(loaded.rows)
            locations.extend(loaded.where(i) for i in range(len(loaded.rows)))
    template = None
    if chat_rows and data_cfg.train_on == "assistant":
        # Assistant-only masks need generation markers; a derived template is proven byte-identical to the
        # tokenizer's own on every row of every split (not only train) before anything is trained.
        template = prepare_training_template(tokenizer, chat_rows, locations)
    elif chat_rows:
        check_tool_rendering(tokenizer, chat_rows, locations)  # prepare_training_template does it otherwise

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

    # Test items are evaluation items like `tuneforge eval --data` reads: the model renders them with its own
    # template (byte-identical to the training template, proven above), so a run's evaluation is `tuneforge eval`.
    items = items_from_loaded(splits["test"], max_items=max_test_items) if "test" in splits else []
    return PreparedData(splits=splits, rendered=rendered, stats=stats, template=template, items=items)


def dataset_lineage(splits: dict) -> dict:
    return {
        name: {"path": str(loaded.path), "sha256": loaded.sha256, "rows": len(loaded.rows), "format": loaded.format}
        for name, loaded in splits.items()
    }


def pack_text(rows: list[dict], tokenizer, block_size: int) -> tuple[list[dict], dict]:
    """Continued pretraining: tokenize documents, join them with EOS and cut the stream into full blocks.

    Blocks are plain causal windows: a block may hold the end of one document and the start of the next, separated
    by EOS, and attention crosses that boundary (as in GPT-style pretraining). Every token carries loss; the tail
    shorter than a block is dropped (reported as `dropped_tokens`) unless it is the only block.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate documents", hint="use a tokenizer with eos_token")
    stream: list[int] = []
    for row in rows:
        stream.extend(tokenizer(row["text"], add_special_tokens=False)["input_ids"])
        stream.append(int(eos))
    full = len(stream) // block_size
    blocks = [stream[i * block_size:(i + 1) * block_size] for i in range(full)]
    if not blocks and stream:
        blocks = [stream]
    kept = sum(len(b) for b in blocks)
    rendered = [{"input_ids": b, "assistant_masks": [1] * len(b), "truncated": False} for b in blocks]
    stats = {"examples": len(rendered), "documents": len(rows), "tokens": kept, "trained_tokens": kept,
             "trained_share": 1.0 if kept else 0.0, "truncated": 0, "dropped_tokens": len(stream) - kept}
    return rendered, stats
