"""Rows -> token ids + loss masks, and rows -> generation prompts for evaluation.

Training and generation share one template (the proven TrainingTemplate), so the prompt a tuned model
is evaluated on is byte for byte the prefix it was trained to continue.
"""
from __future__ import annotations

from tuneforge.data.chat_template import TrainingTemplate, template_messages, trained_runs
from tuneforge.data.formats import LoadedData
from tuneforge.errors import DataError

TRAIN_ON = ("assistant", "all")


def _check_args(max_length: int, train_on: str) -> None:
    if train_on not in TRAIN_ON:
        raise DataError(f"unknown train_on value {train_on!r}", hint="use `assistant` or `all`")
    if not isinstance(max_length, int) or max_length < 1:
        raise DataError(f"max_length must be a positive integer, got {max_length!r}")


def _eos_id(tokenizer) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise DataError(
            "the tokenizer has no EOS token, so a completion cannot be terminated",
            hint="use a tokenizer that defines eos_token (the model must learn where to stop)",
        )
    return int(eos)


def _render_chat(row: dict, tokenizer, template: TrainingTemplate | None, train_on: str) -> tuple[list[int], list[int]]:
    messages = template_messages(row)
    if train_on == "all":
        # Any template renders the same text here; prefer the proven one when given so ids match training.
        out = tokenizer.apply_chat_template(messages, chat_template=template.template if template else None,
                                            tokenize=True, return_dict=True)
        ids = list(out["input_ids"])
        return ids, [1] * len(ids)
    if template is None:
        raise ValueError("train_on='assistant' needs a TrainingTemplate (see prepare_training_template)")
    out = tokenizer.apply_chat_template(messages, chat_template=template.template, tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), [int(b) for b in out["assistant_masks"]]
    weights = [m.get("weight", 1) for m in row["messages"] if m["role"] == "assistant"]
    runs = trained_runs(mask)
    if len(runs) != len(weights):
        # Each assistant turn must map to exactly one trained run, or weight-0 turns cannot be located.
        raise DataError(
            f"the training template marks {len(runs)} trained spans for {len(weights)} assistant messages",
            hint="the template's {% generation %} markers must wrap each assistant message exactly once",
        )
    for (start, end), weight in zip(runs, weights):
        if weight == 0:
            mask[start:end] = [0] * (end - start)
    return ids, mask


def _render_prompt_completion(row: dict, tokenizer, train_on: str) -> tuple[list[int], list[int]]:
    # Prompt and completion are tokenized apart so the prompt ids are exactly what generation is given.
    prompt = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
    completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [_eos_id(tokenizer)]
    first = 1 if train_on == "all" else 0
    return list(prompt) + list(completion), [first] * len(prompt) + [1] * len(completion)


def render_example(row: dict, tokenizer, template: TrainingTemplate | None, max_length: int,
                   train_on: str = "assistant") -> dict:
    """One row -> {"input_ids", "assistant_masks" (1 = carries loss), "truncated"}, right-truncated."""
    _check_args(max_length, train_on)
    if "messages" in row:
        ids, mask = _render_chat(row, tokenizer, template, train_on)
    elif "prompt" in row and "completion" in row:
        ids, mask = _render_prompt_completion(row, tokenizer, train_on)
    else:
        raise ValueError(f"not a normalised row (expected 'messages' or 'prompt'+'completion'): keys {sorted(row)}")
    truncated = len(ids) > max_length
    return {"input_ids": ids[:max_length], "assistant_masks": mask[:max_length], "truncated": truncated}


def render_dataset(data: LoadedData, tokenizer, template: TrainingTemplate | None, max_length: int,
                   train_on: str = "assistant") -> tuple[list[dict], dict]:
    """Render every row; stats count what truncation and masking did, so nothing changes unreported.

    Rows left with no trained token (e.g. all assistant turns weight 0, or truncated before the answer) are
    kept, in order, so row i still corresponds to data.rows[i]; `no_trained_tokens` says how many.
    """
    _check_args(max_length, train_on)
    rendered: list[dict] = []
    problems: list[str] = []
    for i, row in enumerate(data.rows):
        try:
            rendered.append(render_example(row, tokenizer, template, max_length, train_on))
        except DataError as exc:
            problems.append(f"{data.where(i)}: {exc.message}")
    if problems:
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise DataError(f"{len(problems)} rows of {data.path} could not be rendered:\n  " + "\n  ".join(shown),
                        hint="see the chat-template notes: `tuneforge data preview` shows how a row renders")
    tokens = sum(len(r["input_ids"]) for r in rendered)
    trained = sum(sum(r["assistant_masks"]) for r in rendered)
    stats = {
        "examples": len(rendered),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_share": trained / tokens if tokens else 0.0,
        "truncated": sum(r["truncated"] for r in rendered),
        "no_trained_tokens": sum(1 for r in rendered if not any(r["assistant_masks"])),
    }
    return rendered, stats
