"""Chat templates for assistant-only loss.

`tokenizer.apply_chat_template(..., return_assistant_tokens_mask=True)` only knows which tokens belong to
the assistant when the template wraps them in `{% generation %}...{% endgeneration %}`. Most shipped
templates (SmolLM2's ChatML among them) have no such markers. Rather than hand-maintaining marked copies
per model, we derive a marked template from the original by a rewrite strategy and then *prove*, on the
user's own rows, that it renders the exact same text as the original. A training template that renders
even one byte differently would teach the model a prompt format it never sees at inference, so an
unproven derivation is refused, never used.

Strategies are tried in order; each returns a rewritten template or None when the template is not of its
shape. Adding a family (e.g. Llama-3's `{% set content = ... %}{{ content }}`) means adding one function
to `STRATEGIES`; the proof step is shared.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from tuneforge.data.messages import has_tools
from tuneforge.errors import DataError

_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")
_FOR_RE = re.compile(r"\{%-?\s*for\s+(\w+)\s+in\s+\w*messages\b")
_EXPR_RE = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.S)
_STRING_RE = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""", re.S)
_IDENT_RE = re.compile(r"[A-Za-z_]\w*")

FIX_HINT = (
    "set `model.chat_template_path` to a copy of the model's chat template in which each assistant message's "
    "content and end-of-turn token are wrapped in {% generation %}...{% endgeneration %}, or set "
    "`data.train_on: all` to train on every token (no template change needed)"
)


@dataclass
class TrainingTemplate:
    template: str
    derived: bool
    verified_rows: int
    strategy: str | None = None  # which rewrite produced it (None: the tokenizer's template had markers)
    end_of_turn: str | None = None  # the token trained after each assistant message, when known


_TEMPLATE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def template_message(message: dict) -> dict:
    """A message as the template sees it: our `weight` key is a training concern, not template input."""
    return {k: message[k] for k in _TEMPLATE_KEYS if k in message}


def template_messages(row: dict) -> list[dict]:
    return [template_message(m) for m in row["messages"]]


def prompt_messages(row: dict) -> list[dict]:
    """Messages before the last assistant turn: what the model is given when asked to produce that turn."""
    messages = template_messages(row)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]


def has_generation_markers(template: str) -> bool:
    return bool(_GENERATION_RE.search(template))


def original_template(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # some tokenizers ship several named templates
        template = template.get("default")
    if not isinstance(template, str) or not template.strip():
        raise DataError(
            "the tokenizer has no chat template, so chat rows cannot be rendered",
            hint="set `model.chat_template_path` to a Jinja chat template file, or convert the data to "
            "prompt_completion rows",
        )
    return template


# -------------------------------------------------------------------------------- strategy: ChatML-like


def _split_top_level(expr: str) -> tuple[list[str], list[str]] | None:
    """Split a Jinja expression at top-level `+`/`~`; returns (operands, operators) or None if not a pure
    concatenation (a top-level conditional would change meaning when its operands are regrouped)."""
    operands: list[str] = []
    operators: list[str] = []
    depth, quote, start, i = 0, None, 0, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in "+~" and depth == 0:
            operands.append(expr[start:i].strip())
            operators.append(c)
            start = i + 1
        i += 1
    operands.append(expr[start:].strip())
    bare = _STRING_RE.sub("''", expr)
    if quote or depth or re.search(r"\b(if|else|and|or|not|in)\b", bare) or not all(operands):
        return None
    return operands, operators


def _join(operands: list[str], operators: list[str]) -> str:
    if not operands:
        return "''"
    out = operands[0]
    for op, operand in zip(operators, operands[1:]):
        out += f" {op} {operand}"
    return out


def _special_tokens(tokenizer) -> list[str]:
    tokens = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values():
        if getattr(added, "special", False):
            tokens.add(str(added.content))
    return sorted((t for t in tokens if t), key=len, reverse=True)


def _rewrite_expression(expr: str, var: str, specials: list[str]) -> tuple[str, str] | None:
    """Rewrite one `{{ header + content + eot + tail }}` expression; returns (jinja, end_of_turn)."""
    split = _split_top_level(expr)
    if split is None:
        return None
    operands, operators = split
    content_re = re.compile(rf"\b{re.escape(var)}\s*(\[\s*['\"]content['\"]\s*\]|\.content\b)")
    content_at = [i for i, op in enumerate(operands) if content_re.search(op)]
    if len(content_at) != 1:
        return None
    c = content_at[0]
    for j in range(c + 1, len(operands)):
        operand = operands[j]
        if operand == "eos_token":
            gen = (operands[c:j + 1], operators[c:j])
            post = (operands[j + 1:], operators[j + 1:])
            eot = "eos_token"
            break
        if _STRING_RE.fullmatch(operand):
            body = operand[1:-1]
            hits = [(body.find(t), t) for t in specials if t in body]
            if not hits:
                continue
            pos, eot = min(hits)
            cut = pos + len(eot)
            quote = operand[0]
            head_lit, tail_lit = quote + body[:cut] + quote, quote + body[cut:] + quote
            gen = (operands[c:j] + [head_lit], operators[c:j])
            rest = operands[j + 1:]
            post = (([tail_lit] if body[cut:] else []) + rest,
                    (operators[j:] if body[cut:] else operators[j + 1:]))
            break
    else:
        return None
    pre = (operands[:c], operators[:c - 1] if c else [])
    jinja = (
        f"{{% if {var}['role'] == 'assistant' %}}"
        f"{{{{ {_join(*pre)} }}}}{{% generation %}}{{{{ {_join(*gen)} }}}}{{% endgeneration %}}{{{{ {_join(*post)} }}}}"
        f"{{% else %}}{{{{ {expr.strip()} }}}}{{% endif %}}"
    )
    return jinja, eot


def derive_chatml_like(template: str, tokenizer) -> tuple[str, str] | None:
    """Templates that emit each message as ONE concatenation `header + content + <end-of-turn> + tail`
    inside `{% for message in messages %}` (ChatML: SmolLM2, Qwen, Hermes ...).

    Each such expression becomes `if assistant: header, generation(content + eot), tail; else: original`.
    The new tags are fenced with `{{ '' }}` on both sides because HF renders with trim_blocks/lstrip_blocks:
    a block tag placed right before a newline or after indentation would otherwise eat that whitespace.
    """
    loop = _FOR_RE.search(template)
    if not loop:
        return None
    var = loop.group(1)
    specials = _special_tokens(tokenizer)
    pieces: list[str] = []
    last = 0
    eot: str | None = None
    for match in _EXPR_RE.finditer(template, loop.end()):
        rewritten = _rewrite_expression(match.group(2), var, specials)
        if rewritten is None:
            continue
        jinja, eot = rewritten
        left = "{{- '' }}" if match.group(1) else "{{ '' }}"
        right = "{{ '' -}}" if match.group(3) else "{{ '' }}"
        pieces += [template[last:match.start()], left, jinja, right]
        last = match.end()
    if eot is None:
        return None
    pieces.append(template[last:])
    return "".join(pieces), eot


STRATEGIES: list[tuple[str, Callable[[str, object], tuple[str, str] | None]]] = [
    ("chatml_like", derive_chatml_like),
]


# ------------------------------------------------------------------------------------------------ proof


def _first_difference(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at character {i}: original {a[max(0, i - 30):i + 30]!r} vs derived {b[max(0, i - 30):i + 30]!r}"


def _render(tokenizer, messages: list[dict], template: str, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def trained_runs(mask: list[int]) -> list[tuple[int, int]]:
    """[(start, end)) of each maximal run of 1s in a mask."""
    runs, start = [], None
    for i, bit in enumerate(list(mask) + [0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _check_row(tokenizer, row: dict, original: str, derived: str, eot: str | None) -> str | None:
    """Return why the derived template is wrong for this row, or None if it is proven right."""
    messages = template_messages(row)
    variants = [(messages, False)]
    if prompt_messages(row):
        variants.append((prompt_messages(row), True))
    for msgs, gen_prompt in variants:
        a, b = _render(tokenizer, msgs, original, gen_prompt), _render(tokenizer, msgs, derived, gen_prompt)
        if a != b:
            what = "the prompt with add_generation_prompt" if gen_prompt else "the full conversation"
            return f"renders {what} differently {_first_difference(a, b)}"
    # Same text is necessary but not sufficient: the markers must also sit around each assistant answer.
    out = tokenizer.apply_chat_template(messages, chat_template=derived, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    runs = trained_runs(out["assistant_masks"])
    turns = [m for m in messages if m["role"] == "assistant"]
    answers = [m["content"] for m in turns]
    if len(runs) != len(answers):
        return f"marks {len(runs)} trained spans for {len(answers)} assistant messages"
    eot_text = tokenizer.eos_token if eot == "eos_token" else eot
    for (s, e), answer, turn in zip(runs, answers, turns):
        if turn.get("tool_calls"):
            # A derived template wraps the content expression; where a template renders the calls is its own
            # business, so a derived mask cannot be proven to cover them.
            return ("has an assistant turn with tool calls; derived templates only cover text answers, so this "
                    "needs a chat template whose {% generation %} markers wrap the tool calls")
        text = tokenizer.decode(out["input_ids"][s:e])
        # Whitespace is compared loosely because templates may `| trim` content; anything else that is
        # trained besides the answer and its end-of-turn token (a role header, say) is a wrong mask.
        body = text.strip()
        if eot_text:
            if not body.endswith(eot_text):
                return f"marks {text!r} as trained for the assistant answer {answer!r} (no end-of-turn token)"
            body = body[: -len(eot_text)].strip()
        if body != answer.strip():
            return f"marks {text!r} as trained for the assistant answer {answer!r}"
    return None


def prepare_training_template(tokenizer, rows: list[dict], locations: list[str] | None = None) -> TrainingTemplate:
    """The template to train and generate with, proven equivalent to the tokenizer's own on `rows`.

    Only chat rows (with "messages") take part; `locations` (e.g. "train.jsonl:12" per row) makes a failed
    proof point at the row that broke it.
    """
    original = original_template(tokenizer)
    check_tool_rendering(tokenizer, rows, locations)
    if has_generation_markers(original):
        return TrainingTemplate(template=original, derived=False, verified_rows=0)
    chat_rows = [(i, r) for i, r in enumerate(rows) if "messages" in r]
    failures: list[str] = []
    for name, strategy in STRATEGIES:
        result = strategy(original, tokenizer)
        if result is None:
            continue
        derived, eot = result
        failure = None
        for i, row in chat_rows:
            reason = _check_row(tokenizer, row, original, derived, eot)
            if reason:
                where = locations[i] if locations else f"row {i}"
                failure = f"strategy {name!r}: {where}: the derived template {reason}"
                break
        if failure is None:
            return TrainingTemplate(template=derived, derived=True, verified_rows=len(chat_rows),
                                    strategy=name, end_of_turn=eot)
        failures.append(failure)
    if not failures:
        raise DataError(
            "the chat template has no {% generation %} markers and none of tuneforge's derivation strategies "
            f"({', '.join(n for n, _ in STRATEGIES)}) recognises its shape, so assistant-only loss masks cannot "
            "be computed",
            hint=FIX_HINT,
        )
    raise DataError(
        "the chat template has no {% generation %} markers and the derived training template could not be "
        "proven identical to it on this data:\n  " + "\n  ".join(failures),
        hint=FIX_HINT,
    )


# ------------------------------------------------------------------------------------------------ tools


def _render_or_error(tokenizer, messages: list[dict], template: str) -> tuple[str | None, str | None]:
    try:
        return _render(tokenizer, messages, template, False), None
    except Exception as exc:  # noqa: BLE001 - a template is user code: jinja errors, raise_exception(), TypeErrors
        return None, f"{type(exc).__name__}: {exc}"


def _conversations(row: dict) -> list[list[dict]]:
    """The message lists a row is rendered as: a chat row's messages; a conversational preference/KTO row's
    prompt followed by each answer."""
    if "messages" in row:
        return [row["messages"]]
    prompt = row.get("prompt")
    if not isinstance(prompt, list):
        return []
    return [prompt + row[k] for k in ("chosen", "rejected", "completion") if isinstance(row.get(k), list)]


def check_tool_rendering(tokenizer, rows: list[dict], locations: list[str] | None = None) -> None:
    """Rows with tool calls or tool messages must render through the tokenizer's chat template with the calls and
    results visible in the text. Many templates were written for plain chat: they raise on a `tool` role, or
    render an assistant turn that only calls a tool as an empty answer, which would train the model to answer
    nothing. Raises one DataError naming every such row; rows without tools cost nothing. Chat rows and
    conversational preference/KTO rows are checked.
    """
    tool_rows = [(i, c) for i, r in enumerate(rows) for c in _conversations(r) if has_tools(c)]
    if not tool_rows:
        return
    template = original_template(tokenizer)
    failures: list[str] = []
    for i, conversation in tool_rows:
        where = locations[i] if locations else f"row {i}"
        messages = template_messages({"messages": conversation})
        text, error = _render_or_error(tokenizer, messages, template)
        if text is None:
            failures.append(f"{where}: the chat template cannot render this row's tool messages ({error})")
            continue
        without_calls, _ = _render_or_error(tokenizer, [{k: v for k, v in m.items() if k != "tool_calls"}
                                                        for m in messages], template)
        names = [c["function"]["name"] for m in messages for c in m.get("tool_calls", [])]
        lost = [n for n in names if n not in text]
        if names and (without_calls == text or lost):
            failures.append(f"{where}: the chat template drops the tool calls ({', '.join(lost or names)} missing "
                            "from the rendered text)")
            continue
        results = [m["content"] for m in messages if m["role"] == "tool" and m["content"].strip()]
        if any(r.strip() not in text for r in results):
            failures.append(f"{where}: the chat template drops tool results (a tool message's content is missing "
                            "from the rendered text)")
    if failures:
        shown = failures[:20] + ([f"... and {len(failures) - 20} more"] if len(failures) > 20 else [])
        raise DataError(f"{len(failures)} row(s) with tool calls cannot be rendered by the model's chat template:\n  "
                        + "\n  ".join(shown),
                        hint="use a model whose chat template renders `tool_calls` and `tool` messages, or give a "
                        "template that does (model.chat_template_path; `data preview --chat-template`)")
