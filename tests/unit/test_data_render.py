"""Token ids + loss masks: exactly each assistant answer and its <|im_end|> is trained, nothing else."""
from __future__ import annotations

import json

import pytest

from tuneforge.data.chat_template import prepare_training_template, trained_runs
from tuneforge.data.formats import load_dataset_file
from tuneforge.data.render import render_dataset, render_example
from tuneforge.errors import DataError
from tuneforge.eval.tasks import make_item
from tuneforge.models.inference import InferenceEngine


def chat(*turns, system=None, weights=None):
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": "system", "content": system}] if system else []
    for k, (role, content) in enumerate(zip(roles, turns)):
        message = {"role": role, "content": content}
        if weights and role == "assistant" and weights[k // 2] is not None:
            message["weight"] = weights[k // 2]
        messages.append(message)
    return {"messages": messages}


ROWS = [
    chat("hi", "hello"),
    chat("Extract it.\n\nAda is at X in Rome.", '{"name": "Ada", "city": "Rome"}', system="Be terse."),
    chat("q1", "a1", "q2", "a2 with\nnewline", "q3", "a3"),
]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    """Module-wide: these tests never mutate the tokenizer, and loading it costs ~0.7 s each time."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def template(tokenizer):
    return prepare_training_template(tokenizer, ROWS)


def trained_texts(tokenizer, out):
    return [tokenizer.decode(out["input_ids"][s:e]) for s, e in trained_runs(out["assistant_masks"])]


@pytest.mark.parametrize("row", ROWS)
def test_mask_is_exactly_each_answer_plus_end_of_turn(tokenizer, template, row):
    out = render_example(row, tokenizer, template, max_length=512)
    answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    assert trained_texts(tokenizer, out) == [a + "<|im_end|>" for a in answers]
    # <|im_end|> is also SmolLM2's pad token; it must still be trained or a tuned model never stops.
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    ends = [e - 1 for _, e in trained_runs(out["assistant_masks"])]
    assert all(out["input_ids"][i] == tokenizer.eos_token_id for i in ends)
    # Untrained tokens render the prompt side: the full text minus the answers is role headers and user text.
    full = tokenizer.apply_chat_template([{k: m[k] for k in ("role", "content")} for m in row["messages"]],
                                         tokenize=False)
    assert tokenizer.decode(out["input_ids"]) == full
    assert not out["truncated"]


def test_weight_zero_turns_are_not_trained(tokenizer, template):
    row = chat("q1", "a1", "q2", "a2", "q3", "a3", weights=[0, None, 1])
    out = render_example(row, tokenizer, template, max_length=512)
    assert trained_texts(tokenizer, out) == ["a2<|im_end|>", "a3<|im_end|>"]
    all_zero = chat("q", "a", weights=[0])
    assert sum(render_example(all_zero, tokenizer, template, 512)["assistant_masks"]) == 0


def test_train_on_all_trains_every_token(tokenizer, template):
    out = render_example(ROWS[2], tokenizer, template, max_length=512, train_on="all")
    assert len(out["input_ids"]) > 0 and out["assistant_masks"] == [1] * len(out["input_ids"])
    # No generation markers are needed for train_on=all.
    assert render_example(ROWS[2], tokenizer, None, 512, train_on="all")["input_ids"] == out["input_ids"]


def test_right_truncation(tokenizer, template):
    full = render_example(ROWS[2], tokenizer, template, max_length=512)
    cut = render_example(ROWS[2], tokenizer, template, max_length=40)
    assert cut["truncated"] and len(cut["input_ids"]) == 40
    assert cut["input_ids"] == full["input_ids"][:40] and cut["assistant_masks"] == full["assistant_masks"][:40]
    exact = render_example(ROWS[2], tokenizer, template, max_length=len(full["input_ids"]))
    assert not exact["truncated"]


def test_prompt_completion_masks(tokenizer):
    row = {"prompt": "The capital of France is", "completion": " Paris."}
    out = render_example(row, tokenizer, None, max_length=512)
    prompt_ids = tokenizer(row["prompt"])["input_ids"]
    n = len(prompt_ids)
    assert out["input_ids"][:n] == prompt_ids
    assert out["input_ids"][-1] == tokenizer.eos_token_id
    assert out["assistant_masks"] == [0] * n + [1] * (len(out["input_ids"]) - n)
    assert tokenizer.decode(out["input_ids"][n:]) == " Paris.<|im_end|>"
    assert render_example(row, tokenizer, None, 512, train_on="all")["assistant_masks"] == [1] * len(out["input_ids"])
    item = make_item("1", "x", row["prompt"], row["completion"])
    assert InferenceEngine(None, tokenizer).prompt_ids(item) == prompt_ids


@pytest.mark.parametrize("row", ROWS + [chat("q1", "a1", "q2", "a2", weights=[1, 0])])
def test_generation_prompt_is_prefix_of_training_ids(tokenizer, template, row):
    """The inference engine renders an evaluation prompt with the model's own template; its ids must be exactly the
    training render (derived template) up to where the answer starts, or evaluation would ask another question."""
    from tuneforge.data.chat_template import prompt_messages

    ids = InferenceEngine(None, tokenizer).prompt_ids(prompt_messages(row))
    full = render_example({"messages": [{k: m[k] for k in ("role", "content")} for m in row["messages"]]},
                          tokenizer, template, 512)
    assert full["input_ids"][: len(ids)] == ids
    # The prefix ends exactly where the last trained span (the answer) starts.
    assert trained_runs(full["assistant_masks"])[-1][0] == len(ids)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_render_dataset_stats(tokenizer, tmp_path):
    path = tmp_path / "d.jsonl"
    rows = ROWS + [chat("q", "a", weights=[0])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_dataset_file(str(path))
    template = prepare_training_template(tokenizer, data.rows)
    rendered, stats = render_dataset(data, tokenizer, template, max_length=60)
    assert len(rendered) == 4
    tokens = sum(len(r["input_ids"]) for r in rendered)
    trained = sum(sum(r["assistant_masks"]) for r in rendered)
    assert stats == {"examples": 4, "tokens": tokens, "trained_tokens": trained, "trained_share": trained / tokens,
                     "truncated": 1, "no_trained_tokens": 1}


def test_bad_arguments(tokenizer, template):
    with pytest.raises(DataError, match="unknown train_on"):
        render_example(ROWS[0], tokenizer, template, 512, train_on="prompt")
    with pytest.raises(DataError, match="max_length"):
        render_example(ROWS[0], tokenizer, template, 0)
