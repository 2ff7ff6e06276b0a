"""Derived training templates: byte-identical to the original on the user's rows, or refused."""
from __future__ import annotations

import re

import pytest

from tuneforge.data import chat_template as ct
from tuneforge.data.chat_template import prepare_training_template
from tuneforge.errors import DataError


def chat(*turns, system=None):
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": r, "content": c} for r, c in zip(roles, turns)]}


VARIED_ROWS = [
    chat("hi", "hello"),
    chat("Extract JSON.\n\nAda works at X.", '{"name": "Ada"}', system="Be terse."),
    chat("q1", "a1", "q2", "a2", "q3", "multi\nline\n\nanswer  "),
    chat("  leading and trailing spaces  ", "\nstarts with newline", system="You are {{ not jinja }} %}"),
    chat("unicode: caf\u00e9 \u65e5\u672c \U0001f600", "quotes ' \" and backslash \\ fine"),
]


def test_smollm2_template_is_derived_and_proven(tokenizer):
    assert not ct.has_generation_markers(tokenizer.chat_template)
    result = prepare_training_template(tokenizer, VARIED_ROWS)
    assert result.derived and result.strategy == "chatml_like"
    assert result.verified_rows == len(VARIED_ROWS)
    assert result.end_of_turn == "<|im_end|>"
    assert ct.has_generation_markers(result.template)
    for row in VARIED_ROWS:
        for msgs, gen in ((ct.template_messages(row), False), (ct.prompt_messages(row), True)):
            original = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            derived = tokenizer.apply_chat_template(msgs, chat_template=result.template, tokenize=False,
                                                    add_generation_prompt=gen)
            assert derived == original


def test_template_with_markers_used_as_is(tokenizer):
    marked = prepare_training_template(tokenizer, VARIED_ROWS).template
    tokenizer.chat_template = marked
    result = prepare_training_template(tokenizer, VARIED_ROWS)
    assert result.template == marked and not result.derived and result.verified_rows == 0


def test_whitespace_control_and_tilde_concatenation(tokenizer):
    # Same ChatML output written in another style: `-` trimming, `~`, `message.content`, eos_token variable.
    tokenizer.chat_template = (
        "{%- for m in messages %}\n    {{- '<|im_start|>' ~ m.role ~ '\\n' ~ m.content ~ eos_token ~ '\\n' }}\n"
        "{%- endfor %}\n{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    result = prepare_training_template(tokenizer, VARIED_ROWS)
    assert result.derived and result.end_of_turn == "eos_token"
    row = VARIED_ROWS[2]
    out = tokenizer.apply_chat_template(ct.template_messages(row), chat_template=result.template, tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    trained = [tokenizer.decode(out["input_ids"][s:e]) for s, e in ct.trained_runs(out["assistant_masks"])]
    assert trained == ["a1<|im_end|>", "a2<|im_end|>", "multi\nline\n\nanswer  <|im_end|>"]


def test_unrecognised_template_is_refused_with_hint(tokenizer):
    # Llama-3 style: content is built in a {% set %} and emitted later; no strategy handles it (yet).
    tokenizer.chat_template = (
        "{% for message in messages %}{% set content = '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>\\n' %}{{ content }}{% endfor %}"
    )
    with pytest.raises(DataError) as info:
        prepare_training_template(tokenizer, VARIED_ROWS)
    assert "none of tuneforge's derivation strategies (chatml_like) recognises its shape" in info.value.message
    assert "model.chat_template_path" in info.value.hint and "data.train_on: all" in info.value.hint


def test_unproven_derivation_is_refused_naming_the_row(tokenizer, monkeypatch):
    def sloppy(template, tok):  # drops the newline after each turn: plausible-looking but not identical
        derived, eot = ct.derive_chatml_like(template, tok)
        return derived.replace("{{ '\n' }}{% else %}", "{{ '' }}{% else %}"), eot

    monkeypatch.setattr(ct, "STRATEGIES", [("sloppy", sloppy)])
    with pytest.raises(DataError) as info:
        prepare_training_template(tokenizer, VARIED_ROWS, locations=[f"d.jsonl:{i + 1}" for i in range(5)])
    message = info.value.message
    assert "strategy 'sloppy': d.jsonl:1: the derived template renders the full conversation differently" in message
    assert "data.train_on: all" in info.value.hint


def test_misplaced_markers_are_caught_even_with_identical_text(tokenizer, monkeypatch):
    def wrong_span(template, tok):  # same text, but the header is inside the generation block
        derived, eot = ct.derive_chatml_like(template, tok)
        derived = derived.replace("{{ '<|im_start|>' + message['role'] + '\n' }}{% generation %}",
                                  "{% generation %}{{ '<|im_start|>' + message['role'] + '\n' }}")
        return derived, eot

    monkeypatch.setattr(ct, "STRATEGIES", [("wrong_span", wrong_span)])
    expected = "marks " + re.escape(repr("<|im_start|>assistant\nhello<|im_end|>")) + " as trained"
    with pytest.raises(DataError, match=expected):
        prepare_training_template(tokenizer, VARIED_ROWS)


def test_no_chat_template(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        prepare_training_template(tokenizer, VARIED_ROWS)
