"""Message lists: chat rows, ShareGPT conversations, tool calls, and the message sides of preference/KTO rows.

A normalised message is {"role", "content", "weight"?, "tool_calls"?, "tool_call_id"?, "name"?}:

    system / user   role, content
    assistant       role, content ("" when the turn only calls tools), weight 0|1 (chat rows), tool_calls
    tool            role, content (the tool's result), tool_call_id?, name?

A tool call is normalised to {"type": "function", "function": {"name", "arguments": object}, "id"?}; arguments
given as a JSON string (OpenAI's shape) are parsed, since chat templates render them from an object.

Order: an optional system message first; then user first; after a user turn the assistant answers; after an
assistant turn with tool_calls come its tool results, then the assistant again (or another result); after a
plain assistant turn the user speaks. A conversation ends with the assistant, a prompt with a user turn or a
tool result (the response answers it).

ShareGPT turns ({"from", "value"}) are validated by the same code with their own key names, so every error
names the field the user wrote (`conversations[3].from`, not `messages[3].role`).

Every problem goes to `problems.add(line, field, message)`; nothing raises.
"""
from __future__ import annotations

import json
from typing import Any

from tuneforge.data.readers import ProblemSink

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "tool": "tool"}
_BASE_KEYS = ("role", "content")
_TOOL_CALL_SHAPE = '{"type": "function", "function": {"name": ..., "arguments": {...}}, "id": ... (optional)}'


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def text_field(obj: dict, key: str, line: int, problems: ProblemSink, *, required: bool = True,
               allow_empty: bool = False, label: str | None = None) -> str | None:
    label = label or key
    if key not in obj:
        if required:
            problems.add(line, label, "missing")
        return None
    value = obj[key]
    if not isinstance(value, str):
        problems.add(line, label, f"must be a string, got {type_name(value)}")
        return None
    if not allow_empty and not value.strip():
        problems.add(line, label, "is empty")
        return None
    return value


def _weight(message: dict, label: str, role: Any, line: int, problems: ProblemSink) -> int | None:
    if "weight" not in message:
        return None
    value = message["weight"]
    if role != "assistant":
        problems.add(line, f"{label}.weight",
                     "only assistant messages can carry a weight (it says whether the turn is trained)")
        return None
    # bool is an int subclass in Python; `true` almost always means a misunderstanding of the field.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        problems.add(line, f"{label}.weight", f"must be 0 or 1, got {json.dumps(value)}")
        return None
    return int(value)


def _tool_call(call: Any, where: str, line: int, problems: ProblemSink) -> dict | None:
    if not isinstance(call, dict):
        problems.add(line, where, f"must be an object {_TOOL_CALL_SHAPE}, got {type_name(call)}")
        return None
    ok = True
    unknown = sorted(set(call) - {"id", "type", "function"})
    if unknown:
        problems.add(line, where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                     f"(a tool call is {_TOOL_CALL_SHAPE})")
        ok = False
    if call.get("type", "function") != "function":
        problems.add(line, f"{where}.type", f"must be \"function\", got {json.dumps(call['type'])}")
        ok = False
    if "id" in call and (not isinstance(call["id"], str) or not call["id"].strip()):
        problems.add(line, f"{where}.id", f"must be a non-empty string, got {json.dumps(call['id'])}")
        ok = False
    function = call.get("function")
    if not isinstance(function, dict):
        problems.add(line, f"{where}.function", "missing" if function is None else
                     f"must be an object with 'name' and 'arguments', got {type_name(function)}")
        return None
    extra = sorted(set(function) - {"name", "arguments"})
    if extra:
        problems.add(line, f"{where}.function", f"unknown key{'s' if len(extra) > 1 else ''} "
                     f"{', '.join(map(repr, extra))} (allowed: name, arguments)")
        ok = False
    name = text_field(function, "name", line, problems, label=f"{where}.function.name")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            problems.add(line, f"{where}.function.arguments", f"is a string but not valid JSON: {exc.msg}")
            return None
    if not isinstance(arguments, dict):
        problems.add(line, f"{where}.function.arguments", f"must be an object (or a JSON string of one), "
                     f"got {type_name(arguments)}")
        return None
    if name is None or not ok:
        return None
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if "id" in call:
        out["id"] = call["id"]
    return out


def _tool_fields(message: dict, where: str, role: Any, line: int, problems: ProblemSink) -> dict | None:
    """tool_calls (assistant) / tool_call_id and name (tool) of one message, normalised; None on a problem."""
    out: dict[str, Any] = {}
    if "tool_calls" in message:
        calls = message["tool_calls"]
        if role != "assistant":
            problems.add(line, f"{where}.tool_calls", "only assistant messages can make tool calls")
            return None
        if not isinstance(calls, list) or not calls:
            problems.add(line, f"{where}.tool_calls", f"must be a non-empty list of calls {_TOOL_CALL_SHAPE}")
            return None
        normalised = [_tool_call(c, f"{where}.tool_calls[{j}]", line, problems) for j, c in enumerate(calls)]
        if any(c is None for c in normalised):
            return None
        out["tool_calls"] = normalised
    for key in ("tool_call_id", "name"):
        if key in message:
            value = text_field(message, key, line, problems, label=f"{where}.{key}")
            if value is None:
                return None
            out[key] = value
    return out


def _allowed_keys(role: Any, mode: str, role_key: str, content_key: str) -> tuple[str, ...]:
    keys = (role_key, content_key)
    if mode == "chat":
        keys += ("weight",)
    if role_key == "role":  # ShareGPT has no tool-call fields
        keys += ("tool_call_id", "name") if role == "tool" else ("tool_calls",)
    return keys


def validate_messages(messages: Any, label: str, line: int, problems: ProblemSink, mode: str = "chat", *,
                      role_key: str = "role", content_key: str = "content",
                      role_map: dict[str, str] | None = None) -> list[dict] | None:
    """Validate and normalise a message list.

    mode: chat (a whole conversation, weights allowed), conversation (a whole conversation, no weights: a side
    of a preference pair), prompt (ends with a user turn or a tool result) or answer (assistant messages only:
    chosen, rejected, completion). `role_key`/`content_key`/`role_map` read other spellings (ShareGPT's
    from/value and human/gpt speakers).
    """
    if not isinstance(messages, list):
        problems.add(line, label, f"must be a list of messages, got {type_name(messages)}")
        return None
    if not messages:
        problems.add(line, label, "is empty")
        return None
    allowed_roles = tuple(role_map) if role_map else ROLES
    normalised: list[dict] = []
    ok = True
    for i, message in enumerate(messages):
        where = f"{label}[{i}]"
        if not isinstance(message, dict):
            problems.add(line, where, f"must be an object with '{role_key}' and '{content_key}', "
                         f"got {type_name(message)}")
            ok = False
            continue
        raw_role = message.get(role_key)
        role = role_map.get(raw_role) if role_map and isinstance(raw_role, str) else raw_role
        allowed = _allowed_keys(role, mode, role_key, content_key)
        unknown = sorted(set(message) - set(allowed))
        if unknown:
            problems.add(line, where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"(allowed: {', '.join(allowed)})")
            ok = False
        if role_key not in message:
            problems.add(line, f"{where}.{role_key}", "missing")
            ok = False
        elif not isinstance(raw_role, str) or raw_role not in allowed_roles:
            problems.add(line, f"{where}.{role_key}", f"unknown {'speaker' if role_map else 'role'} "
                         f"{json.dumps(raw_role)} (allowed: {', '.join(allowed_roles)})")
            ok = False
        elif mode == "answer" and role != "assistant":
            problems.add(line, f"{where}.{role_key}", f"must be 'assistant' in a response, got {role!r}")
            ok = False
        tools = _tool_fields(message, where, role, line, problems) if role_key == "role" else {}
        calls_only = bool(tools and tools.get("tool_calls")) and message.get(content_key) in (None, "")
        if calls_only:
            content: str | None = ""  # an assistant turn that only calls tools has no text
        else:
            content = text_field(message, content_key, line, problems, label=f"{where}.{content_key}",
                                 allow_empty=role == "tool")
        weight = _weight(message, where, role, line, problems) if mode == "chat" else None
        if content is None or tools is None or ("weight" in message and weight is None):
            ok = False
            continue
        out = {"role": role, "content": content}
        if weight is not None:
            out["weight"] = weight
        out.update(tools)
        normalised.append(out)
    if not ok:
        return None
    if mode != "answer" and not check_order(normalised, line, problems, label, mode, role_key):
        return None
    return normalised


def _next_roles(previous: dict | None) -> tuple[str, ...]:
    if previous is None:
        return ("user",)
    if previous["role"] == "user":
        return ("assistant",)
    if previous["role"] == "tool":
        return ("tool", "assistant")
    return ("tool",) if previous.get("tool_calls") else ("user",)


def check_order(messages: list[dict], line: int, problems: ProblemSink, label: str = "messages",
                mode: str = "chat", role_key: str = "role") -> bool:
    """System only first; user first; user and assistant alternate, with tool results after tool calls; the
    right last turn for the mode."""
    offset = 1 if messages and messages[0]["role"] == "system" else 0
    turns = messages[offset:]
    call_ids: set[str] = set()
    for i, message in enumerate(turns):
        role, where = message["role"], f"{label}[{i + offset}]"
        previous = turns[i - 1] if i else None
        expected = _next_roles(previous)
        if role == "system":
            problems.add(line, f"{where}.{role_key}", "a system message is only allowed as the first message")
            return False
        if role not in expected:
            if role == "tool":
                why = "a tool message must follow an assistant message with tool_calls or another tool message"
            elif expected == ("tool",):
                why = (f"roles out of order: expected 'tool' here, got {role!r} (the assistant message before it "
                       "makes tool calls; their results come next)")
            elif expected == ("tool", "assistant"):
                why = (f"roles out of order: expected 'tool' or 'assistant' here, got {role!r} "
                       "(after tool results the assistant answers)")
            else:
                why = (f"roles out of order: expected {expected[0]!r} here, got {role!r} "
                       "(user and assistant must alternate, starting with user)")
            problems.add(line, f"{where}.{role_key}", why)
            return False
        if message.get("tool_calls"):
            call_ids = {c["id"] for c in message["tool_calls"] if "id" in c}
        if role == "tool" and "tool_call_id" in message and call_ids and message["tool_call_id"] not in call_ids:
            problems.add(line, f"{where}.tool_call_id", f"{message['tool_call_id']!r} matches none of the preceding "
                         f"tool calls' ids ({', '.join(sorted(map(repr, call_ids)))})")
            return False
    roles = [m["role"] for m in turns]
    if mode == "prompt":
        if not roles or roles[-1] not in ("user", "tool"):
            problems.add(line, label, "a prompt must end with a user message (the response answers it)")
            return False
    elif "assistant" not in roles:
        problems.add(line, label, "has no assistant message, so there is nothing to learn from this row")
        return False
    elif roles[-1] != "assistant":
        problems.add(line, f"{label}[{len(messages) - 1}]", "the conversation must end with an assistant message "
                     f"(a trailing {'tool result' if roles[-1] == 'tool' else 'user message'} has no answer to learn)")
        return False
    return True


def sharegpt_messages(obj: dict, line: int, problems: ProblemSink) -> list[dict] | None:
    """ShareGPT's {"conversations": [{"from": "human"|"gpt"|"system"|"tool", "value": ...}], "system"?} -> messages."""
    if "conversations" not in obj:
        problems.add(line, "conversations", "missing")
        return None
    system = text_field(obj, "system", line, problems, required=False)
    if "system" in obj and system is None:
        return None
    messages = validate_messages(obj["conversations"], "conversations", line, problems, role_key="from",
                                 content_key="value", role_map=SHAREGPT_ROLES)
    if messages is None:
        return None
    if system is not None:
        if messages[0]["role"] == "system":
            problems.add(line, "system", "is given twice: as the row's 'system' field and as the first turn")
            return None
        messages.insert(0, {"role": "system", "content": system})
    return messages


def split_implicit_prompt(obj: dict, line: int, problems: ProblemSink) -> tuple[list, list, list] | None:
    """TRL's implicit-prompt preference rows: `chosen` and `rejected` are whole conversations that share their
    opening; the shared messages are the prompt and each side's rest its answer."""
    chosen = validate_messages(obj["chosen"], "chosen", line, problems, mode="conversation")
    rejected = validate_messages(obj["rejected"], "rejected", line, problems, mode="conversation")
    if chosen is None or rejected is None:
        return None
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if chosen == rejected:
        problems.add(line, "rejected", "is identical to the chosen response (there is nothing to prefer)")
        return None
    if k == 0:
        problems.add(line, "chosen", "there is no 'prompt', and chosen and rejected share no opening messages to "
                     "take it from: give a 'prompt', or full conversations that start with the same messages")
        return None
    if k in (len(chosen), len(rejected)):
        side = "chosen" if k == len(chosen) else "rejected"
        problems.add(line, side, "is the start of the other conversation, so it has no answer of its own")
        return None
    if chosen[k - 1]["role"] not in ("user", "tool"):
        problems.add(line, f"chosen[{k}]", f"chosen and rejected first differ after a shared {chosen[k - 1]['role']} "
                     "message; the shared prompt must end with a user message (or a tool result) that both "
                     "sides answer")
        return None
    ok = True
    for side, messages in (("chosen", chosen), ("rejected", rejected)):
        for j in range(k, len(messages)):
            if messages[j]["role"] != "assistant":
                problems.add(line, f"{side}[{j}].role", "after the shared prompt a response may hold only assistant "
                             f"messages, got {messages[j]['role']!r}")
                ok = False
                break
    return (chosen[:k], chosen[k:], rejected[k:]) if ok else None


def has_tools(messages: list[dict]) -> bool:
    return any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
