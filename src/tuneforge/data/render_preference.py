"""Preference / KTO / prompt-only rows -> what TRL's trainers read, and pairs -> token ids with completion masks.

TRL tokenizes preference data itself (its DPO/KTO/ORPO/Reward trainers own their collators); we normalise the row
shapes and keep one tokenization of our own, `tokenize_completion`, for the held-out metrics (preference accuracy,
chosen-answer NLL, generation prompts). It follows TRL's rule: the completion starts where the prompt's ids and the
prompt+completion ids diverge, so both count the same tokens.
"""
from __future__ import annotations


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def _as_prompt_messages(prompt) -> list[dict]:
    return prompt if _is_messages(prompt) else [{"role": "user", "content": str(prompt)}]


def _as_completion_messages(completion) -> list[dict]:
    return completion if _is_messages(completion) else [{"role": "assistant", "content": str(completion)}]


def completion_text(completion) -> str:
    """The answer text of a completion given as a string or as assistant messages."""
    if _is_messages(completion):
        return "".join(m["content"] for m in completion if m["role"] == "assistant")
    return str(completion)


def conversational(row: dict, keys: tuple[str, ...]) -> bool:
    """A row is rendered with the chat template when any of its parts is a message list."""
    return any(_is_messages(row.get(k)) for k in keys)


def to_trl_preference(row: dict, messages: bool = False) -> dict:
    """{"prompt", "chosen", "rejected"} all message lists, or all strings (TRL appends EOS to plain text)."""
    if messages or conversational(row, ("prompt", "chosen", "rejected")):
        return {"prompt": _as_prompt_messages(row["prompt"]), "chosen": _as_completion_messages(row["chosen"]),
                "rejected": _as_completion_messages(row["rejected"])}
    return {"prompt": str(row["prompt"]), "chosen": str(row["chosen"]), "rejected": str(row["rejected"])}


def to_trl_kto(row: dict, messages: bool = False) -> dict:
    if messages or conversational(row, ("prompt", "completion")):
        return {"prompt": _as_prompt_messages(row["prompt"]), "completion": _as_completion_messages(row["completion"]),
                "label": bool(row["label"])}
    return {"prompt": str(row["prompt"]), "completion": str(row["completion"]), "label": bool(row["label"])}


def to_trl_rows(rows: list[dict], kind: str) -> list[dict]:
    """A whole split in one shape: one conversational row makes every row conversational (Arrow needs one type)."""
    keys, convert = (("prompt", "chosen", "rejected"), to_trl_preference) if kind == "preference" else \
        (("prompt", "completion"), to_trl_kto)
    messages = any(conversational(r, keys) for r in rows)
    return [convert(r, messages) for r in rows]


def prompt_of(row: dict):
    """The prompt of any normalised row (chat: every message before the last assistant turn)."""
    if "messages" in row:
        last = max(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")
        from tuneforge.data.chat_template import template_message

        return [template_message(m) for m in row["messages"][:last]]
    return row["prompt"]


def reference_of(row: dict) -> str | None:
    if "messages" in row:
        return [m for m in row["messages"] if m["role"] == "assistant"][-1]["content"]
    for key in ("chosen", "completion"):
        if key in row and (key != "completion" or row.get("label", True)):
            return completion_text(row[key])
    return None


def prompt_ids(tokenizer, prompt) -> list[int]:
    if _is_messages(prompt):
        return list(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                  return_dict=True)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def tokenize_completion(tokenizer, prompt, completion, max_length: int) -> dict:
    """{"input_ids", "assistant_masks"} of prompt + completion with loss on the completion only (right-truncated)."""
    head = prompt_ids(tokenizer, prompt)
    if _is_messages(prompt) or _is_messages(completion):
        full = list(tokenizer.apply_chat_template(_as_prompt_messages(prompt) + _as_completion_messages(completion),
                                                  tokenize=True, return_dict=True)["input_ids"])
    else:
        full = list(tokenizer(str(prompt) + str(completion))["input_ids"]) + [tokenizer.eos_token_id]
    start = 0
    while start < min(len(head), len(full)) and head[start] == full[start]:
        start += 1
    mask = [0] * start + [1] * (len(full) - start)
    return {"input_ids": full[:max_length], "assistant_masks": mask[:max_length], "truncated": len(full) > max_length}
