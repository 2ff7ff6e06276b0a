"""Convert normalised rows from one format to another, where the conversion keeps the meaning.

Targets and what they accept:

    chat               alpaca, sharegpt, prompt_completion, chat (tool calls and tool messages kept)
    prompt_completion  single-turn chat/alpaca/sharegpt without a system message (a plain prompt has nowhere to put
                       a system message or earlier turns), prompt_completion
    preference         preference in any source shape: explicit prompt, OpenAI's, TRL's implicit prompt
                       (writes prompt/chosen/rejected)
    openai_dpo         preference (writes OpenAI's input.messages/preferred_output/non_preferred_output;
                       plain-string prompts become one user message, answers one assistant message)
    kto                preference (each pair -> a desirable and an undesirable row), kto
    text               every format, by rendering: conversations with the model's chat template, plain
                       prompt + answer by concatenation; for preference the chosen answer, for KTO only
                       desirable rows (training on an undesirable completion would teach it)

An impossible conversion names each row it fails on; with `skip` those rows are returned as rejected.
"""
from __future__ import annotations

from typing import Any

from tuneforge.data.formats import CHAT_FORMATS, LoadedData
from tuneforge.errors import DataError

TARGETS = ("chat", "prompt_completion", "preference", "openai_dpo", "kto", "text")
_CHAT_SOURCES = CHAT_FORMATS


class _Impossible(Exception):
    """One row cannot be converted; the message says why."""


def _meta(row: dict) -> dict:
    return dict(row.get("meta") or {})


def _as_messages(value: Any, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def _to_chat(row: dict, source: str) -> dict:
    if "messages" in row:
        return {"messages": row["messages"], "meta": _meta(row)}
    if source == "prompt_completion":
        return {"messages": [{"role": "user", "content": row["prompt"]},
                             {"role": "assistant", "content": row["completion"]}], "meta": _meta(row)}
    raise _Impossible(f"a {source} row has no single conversation to train on")


def _to_prompt_completion(row: dict, source: str) -> dict:
    if source == "prompt_completion":
        return {"prompt": row["prompt"], "completion": row["completion"], "meta": _meta(row)}
    if "messages" not in row:
        raise _Impossible(f"a {source} row is not a prompt with one completion")
    messages = row["messages"]
    roles = [m["role"] for m in messages]
    if roles != ["user", "assistant"]:
        why = ("it has a system message" if "system" in roles else f"it has {len(messages)} messages")
        raise _Impossible(f"only single-turn chat (one user + one assistant message) converts to "
                          f"prompt_completion; {why}")
    if messages[1].get("tool_calls"):
        raise _Impossible("its assistant message calls tools, which a plain completion cannot hold")
    if messages[1].get("weight", 1) == 0:
        raise _Impossible("its only assistant message has weight 0, so it teaches nothing")
    return {"prompt": messages[0]["content"], "completion": messages[1]["content"], "meta": _meta(row)}


def _to_preference(row: dict, source: str) -> dict:
    if source != "preference":
        raise _Impossible(f"a {source} row has no chosen/rejected pair")
    return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"], "meta": _meta(row)}


def _to_openai_dpo(row: dict, source: str) -> dict:
    if source != "preference":
        raise _Impossible(f"a {source} row has no chosen/rejected pair")
    meta = _meta(row)
    extra_input = meta.pop("input", None)
    out: dict[str, Any] = {
        "input": {"messages": _as_messages(row["prompt"], "user"),
                  **(extra_input if isinstance(extra_input, dict) else {})},
        "preferred_output": _as_messages(row["chosen"], "assistant"),
        "non_preferred_output": _as_messages(row["rejected"], "assistant"),
    }
    if meta:
        out["meta"] = meta
    return out


def _to_kto(row: dict, source: str) -> list[dict]:
    if source == "kto":
        return [{"prompt": row["prompt"], "completion": row["completion"], "label": row["label"], "meta": _meta(row)}]
    if source != "preference":
        raise _Impossible(f"a {source} row carries no desirable/undesirable label")
    return [{"prompt": row["prompt"], "completion": row[key], "label": label, "meta": {**_meta(row), "pair_side": key}}
            for key, label in (("chosen", True), ("rejected", False))]


class _TextRenderer:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def conversation(self, messages: list[dict]) -> str:
        if self.tokenizer is None:
            raise DataError("converting conversations to text renders them with a chat template, so it needs a model",
                            hint="pass --model (a catalog name such as smollm2-135m-instruct, or a model folder)")
        from tuneforge.data.chat_template import template_message

        return self.tokenizer.apply_chat_template([template_message(m) for m in messages], tokenize=False)

    def __call__(self, row: dict, source: str) -> dict:
        meta = _meta(row)
        if source == "text":
            return {"text": row["text"], "meta": meta}
        if "messages" in row:
            return {"text": self.conversation(row["messages"]), "meta": meta}
        answer_key = "chosen" if source == "preference" else "completion"
        if source == "kto" and not row["label"]:
            raise _Impossible("an undesirable (label false) completion would be trained on as text")
        prompt, answer = row["prompt"], row[answer_key]
        if isinstance(prompt, list):
            return {"text": self.conversation(prompt + _as_messages(answer, "assistant")), "meta": meta}
        return {"text": prompt + answer, "meta": meta}


def convert_rows(data: LoadedData, to: str, *, tokenizer=None, skip: bool = False) -> tuple[list[dict], list[dict]]:
    """(converted rows, rejected rows as {"line", "reasons", "row"}). Without `skip`, any impossible row raises
    one DataError naming every such row."""
    if to not in TARGETS:
        raise DataError(f"unknown conversion target {to!r}", hint=f"use one of: {', '.join(TARGETS)}")
    source = "chat" if data.format in _CHAT_SOURCES else data.format
    step = {"chat": _to_chat, "prompt_completion": _to_prompt_completion, "preference": _to_preference,
            "openai_dpo": _to_openai_dpo, "kto": _to_kto, "text": _TextRenderer(tokenizer)}[to]
    if to == "text" and tokenizer is not None:
        from tuneforge.data.chat_template import check_tool_rendering

        check_tool_rendering(tokenizer, data.rows, [data.where(i) for i in range(len(data.rows))])
    out: list[dict] = []
    rejected: list[dict] = []
    for i, row in enumerate(data.rows):
        try:
            result = step(row, source)
        except _Impossible as why:
            rejected.append({"line": data.line_numbers[i], "reasons": [f"cannot convert {data.format} to {to}: {why}"],
                             "row": row})
            continue
        out.extend(result if isinstance(result, list) else [result])
    if rejected and not skip:
        shown = [f"{data.path}:{r['line']}: {r['reasons'][0]}" for r in rejected[:50]]
        if len(rejected) > 50:
            shown.append(f"... and {len(rejected) - 50} more")
        raise DataError(f"{len(rejected)} of {len(data.rows)} rows cannot be converted to {to}:\n  "
                        + "\n  ".join(shown),
                        hint="fix or drop those rows, or pass --skip-invalid to write them to a side file")
    return out, rejected
