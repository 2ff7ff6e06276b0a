"""Formats from other tools: TRL implicit-prompt preference rows, ShareGPT, and tool calls in chat rows."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tuneforge.data.chat_template import prepare_training_template
from tuneforge.data.formats import load_dataset_file
from tuneforge.data.render import render_example
from tuneforge.errors import DataError

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Weather in Paris?"}
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
RESULT = {"role": "tool", "content": "18C sunny", "tool_call_id": "c1"}
ANSWER = {"role": "assistant", "content": "It is 18C and sunny."}
TOOL_ROW = {"messages": [USER, CALL, RESULT, ANSWER]}

# ChatML with tool calls inside the assistant turn and {% generation %} markers around everything trained.
TOOL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{- '<|im_start|>assistant\\n' -}}{%- generation -%}"
    "{{- message['content'] -}}"
    "{%- for call in message.get('tool_calls') or [] -%}"
    "{{- '<tool_call>' + call['function']['name'] + ' ' + (call['function']['arguments'] | tojson) + '</tool_call>' -}}"
    "{%- endfor -%}{{- '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def problems(path, fmt="auto"):
    with pytest.raises(DataError) as info:
        load_dataset_file(path, fmt)
    return info.value.message


def a(text):
    return {"role": "assistant", "content": text}


def u(text):
    return {"role": "user", "content": text}


# ------------------------------------------------------------------------------------ TRL implicit prompt


def test_trl_implicit_prompt_is_split_off_the_shared_opening(tmp_path):
    opening = [SYSTEM, u("Hi"), a("Hello!"), u("2+2?")]
    path = jsonl(tmp_path, [{"chosen": opening + [a("4")], "rejected": opening + [a("5")], "id": 7},
                            {"chosen": [u("Q"), a("yes")], "rejected": [u("Q"), a("no")]}])
    data = load_dataset_file(path)
    assert data.format == "preference"
    assert data.rows[0] == {"prompt": opening, "chosen": [a("4")], "rejected": [a("5")], "meta": {"id": 7}}
    assert data.rows[1] == {"prompt": [u("Q")], "chosen": [a("yes")], "rejected": [a("no")], "meta": {}}
    assert load_dataset_file(path, "preference").rows == data.rows


def test_trl_implicit_prompt_errors_name_line_and_side(tmp_path):
    path = jsonl(tmp_path, [
        {"chosen": [u("A"), a("x")], "rejected": [u("B"), a("y")]},                   # 1 no shared opening
        {"chosen": [u("A"), a("x"), u("more")], "rejected": [u("A"), a("y")]},        # 2 ends with user
        # 3 differs at a user turn
        {"chosen": [u("A"), a("x"), u("B"), a("1")], "rejected": [u("A"), a("x"), u("C"), a("2")]},
        {"chosen": [u("A"), a("x"), u("B"), a("1")], "rejected": [u("A"), a("y")]},   # 4 user in a response
        {"chosen": [u("A"), a("x")], "rejected": [u("A"), a("x")]},                   # 5 identical
        {"chosen": [u("A"), a("x")], "rejected": [u("A"), a("x"), u("B"), a("y")]},   # 6 prefix of the other
    ])
    text = problems(path)
    assert f"{path}:1: chosen: there is no 'prompt', and chosen and rejected share no opening messages" in text
    assert f"{path}:2: chosen[2]: the conversation must end with an assistant message" in text
    assert f"{path}:3: chosen[2]: chosen and rejected first differ after a shared assistant message" in text
    assert f"{path}:4: chosen[2].role: after the shared prompt a response may hold only assistant messages" in text
    assert f"{path}:5: rejected: is identical to the chosen response" in text
    assert f"{path}:6: chosen: is the start of the other conversation" in text


def test_convert_writes_trl_rows_with_an_explicit_prompt(tmp_path):
    from tuneforge.cli.main import app

    src = jsonl(tmp_path, [{"chosen": [u("Q"), a("good")], "rejected": [u("Q"), a("bad")]}])
    out = tmp_path / "p.jsonl"
    result = CliRunner().invoke(app, ["data", "convert", src, "--to", "preference", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == {"prompt": [u("Q")], "chosen": [a("good")], "rejected": [a("bad")],
                                           "meta": {}}
    assert load_dataset_file(str(out)).rows == load_dataset_file(src).rows


# ---------------------------------------------------------------------------------------------- ShareGPT


def test_sharegpt_rows_become_chat_messages(tmp_path):
    row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                             {"from": "human", "value": "Weather?"}, {"from": "gpt", "value": "Sunny", "weight": 0}],
           "system": "Be brief.", "source": "web"}
    data = load_dataset_file(jsonl(tmp_path, [row]))
    assert data.format == "sharegpt"
    assert data.rows == [{"messages": [SYSTEM, u("Hi"), a("Hello"), u("Weather?"), {**a("Sunny"), "weight": 0}],
                          "meta": {"source": "web"}}]
    first_turn_system = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "x"},
                                           {"from": "gpt", "value": "y"}]}
    assert load_dataset_file(jsonl(tmp_path, [first_turn_system], "s.jsonl")).rows[0]["messages"][0] == \
        {"role": "system", "content": "S"}


def test_sharegpt_errors_name_from_and_value(tmp_path):
    path = jsonl(tmp_path, [
        {"conversations": [{"from": "human", "value": "x"}, {"from": "bot", "value": "y"}]},
        {"conversations": [{"from": "human", "value": "x"}, {"from": "human", "value": "y"}]},
        {"conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "y"}]},
        {"conversations": [{"from": "human", "value": "x", "role": "user"}, {"from": "gpt", "value": "y"}]},
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "x"},
                           {"from": "gpt", "value": "y"}], "system": "t"},
    ])
    text = problems(path)
    assert f'{path}:1: conversations[1].from: unknown speaker "bot" (allowed: human, gpt, system, tool)' in text
    assert f"{path}:2: conversations[1].from: roles out of order: expected 'assistant' here, got 'user'" in text
    assert f"{path}:3: conversations[0].value: is empty" in text
    assert f"{path}:4: conversations[0]: unknown key 'role' (allowed: from, value, weight)" in text
    assert f"{path}:5: system: is given twice" in text
    chat = jsonl(tmp_path, [TOOL_ROW], "c.jsonl")
    assert f"{chat}:1: conversations: missing" in problems(chat, "sharegpt")


def test_convert_sharegpt_to_chat(tmp_path):
    from tuneforge.cli.main import app

    src = jsonl(tmp_path, [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}])
    out = tmp_path / "chat.jsonl"
    result = CliRunner().invoke(app, ["data", "convert", src, "--to", "chat", "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = load_dataset_file(str(out))
    assert back.format == "chat" and back.rows == [{"messages": [u("Hi"), a("Hello")], "meta": {}}]


# ------------------------------------------------------------------------------------------------ tools


def test_tool_rows_validate_and_normalise(tmp_path):
    openai_style = {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        RESULT, ANSWER]}
    data = load_dataset_file(jsonl(tmp_path, [TOOL_ROW, openai_style]))
    assert data.format == "chat" and data.rows[0] == {**TOOL_ROW, "meta": {}}
    assert data.rows[1] == data.rows[0]  # string arguments parsed, null content -> ""


def test_tool_row_errors(tmp_path):
    call = CALL["tool_calls"][0]
    path = jsonl(tmp_path, [
        {"messages": [USER, RESULT, ANSWER]},                                                 # 1 result without a call
        {"messages": [{**USER, "tool_calls": [call]}, ANSWER]},                               # 2 user calls a tool
        {"messages": [USER, CALL, ANSWER]},                                                   # 3 call without result
        {"messages": [USER, CALL, {**RESULT, "tool_call_id": "zz"}, ANSWER]},                 # 4 wrong id
        {"messages": [USER, {**CALL, "tool_calls": [{"function": {"arguments": "{oops"}}]}, RESULT, ANSWER]},  # 5
        {"messages": [USER, CALL, RESULT]},                                                   # 6 ends with a result
        {"messages": [USER, {**CALL, "tool_calls": [{**call, "type": "retrieval"}]}, RESULT, ANSWER]},  # 7
    ])
    text = problems(path)
    assert f"{path}:1: messages[1].role: a tool message must follow an assistant message with tool_calls" in text
    assert f"{path}:2: messages[0].tool_calls: only assistant messages can make tool calls" in text
    assert f"{path}:3: messages[2].role: roles out of order: expected 'tool' here, got 'assistant'" in text
    assert f"{path}:4: messages[2].tool_call_id: 'zz' matches none of the preceding tool calls' ids ('c1')" in text
    assert f"{path}:5: messages[1].tool_calls[0].function.arguments: is a string but not valid JSON" in text
    assert f"{path}:6: messages[2]: the conversation must end with an assistant message (a trailing tool result" in text
    assert f'{path}:7: messages[1].tool_calls[0].type: must be "function", got "retrieval"' in text


def test_template_without_tool_support_is_an_error_naming_the_row(tokenizer, tmp_path):
    from tuneforge.data.chat_template import check_tool_rendering

    # SmolLM2's stock template renders role + content only: the tool call would vanish from training.
    data = load_dataset_file(jsonl(tmp_path, [{"messages": [u("x"), a("y")]}, TOOL_ROW]))
    with pytest.raises(DataError) as info:
        prepare_training_template(tokenizer, data.rows, [data.where(i) for i in range(len(data.rows))])
    assert f"{data.path}:2: the chat template drops the tool calls (get_weather missing" in info.value.message
    strict = ("{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
              "{{ raise_exception('Unsupported role ' + m['role']) }}{% endif %}{{ m['content'] }}{% endfor %}")
    tokenizer.chat_template = strict
    with pytest.raises(DataError, match=r"d.jsonl:2: the chat template cannot render this row's tool messages "
                                        r"\(.*Unsupported role tool"):
        check_tool_rendering(tokenizer, data.rows, [data.where(i) for i in range(len(data.rows))])


def test_tool_rows_render_and_mask_with_a_tool_template(tokenizer, tmp_path):
    tokenizer.chat_template = TOOL_TEMPLATE
    skip_call = {"messages": [USER, {**CALL, "weight": 0}, RESULT, ANSWER]}
    data = load_dataset_file(jsonl(tmp_path, [TOOL_ROW, skip_call]))
    template = prepare_training_template(tokenizer, data.rows)
    assert not template.derived
    trained = []
    for row in data.rows:
        out = render_example(row, tokenizer, template, 4096)
        trained.append(tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]))
    assert trained[0] == '<tool_call>get_weather {"city": "Paris"}</tool_call><|im_end|>It is 18C and sunny.<|im_end|>'
    assert trained[1] == "It is 18C and sunny.<|im_end|>"  # weight 0 on the call turn


def test_audit_counts_tool_rows_like_training(tokenizer, tmp_path):
    from tuneforge.data.audit import AuditInputs, run_audit

    tokenizer.chat_template = TOOL_TEMPLATE
    path = jsonl(tmp_path, [TOOL_ROW, {"messages": [u("Hi"), a("Hello")]}])
    tokens = run_audit(AuditInputs(train=path, max_length=512), tokenizer=tokenizer)["tokens"]
    assert tokens["formula_check"]["mismatches"] == 0
    data = load_dataset_file(path)
    template = prepare_training_template(tokenizer, data.rows)
    assert tokens["trained_tokens"] == sum(sum(render_example(r, tokenizer, template, 4096)["assistant_masks"])
                                           for r in data.rows)


def test_convert_tool_rows(tmp_path, tiny_model_dir):
    from tuneforge.cli.main import app

    src = jsonl(tmp_path, [TOOL_ROW])
    runner = CliRunner()
    result = runner.invoke(app, ["data", "convert", src, "--to", "chat", "--out", str(tmp_path / "c.jsonl")])
    assert result.exit_code == 0 and load_dataset_file(str(tmp_path / "c.jsonl")).rows == [{**TOOL_ROW, "meta": {}}]
    single = jsonl(tmp_path, [{"messages": [USER, CALL]}], "single.jsonl")
    result = runner.invoke(app, ["data", "convert", single, "--to", "prompt_completion",
                                 "--out", str(tmp_path / "p.jsonl")])
    assert (result.exit_code != 0
            and "calls tools, which a plain completion cannot hold" in " ".join(result.output.split()))
    result = runner.invoke(app, ["data", "convert", src, "--to", "text", "--out", str(tmp_path / "t.jsonl"),
                                 "--model", str(tiny_model_dir)])
    assert (result.exit_code != 0
            and f"{src}:1: the chat template drops the tool calls" in " ".join(result.output.split()))


def test_training_data_prep_reads_sharegpt_and_checks_tool_rows(tokenizer, tmp_path):
    from tuneforge.config.schema import DataConfig
    from tuneforge.train.data_prep import prepare_data

    share = jsonl(tmp_path, [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}])
    prepared = prepare_data(DataConfig(train=share, format="sharegpt"), tokenizer)
    assert prepared.template.derived and prepared.stats["train"]["trained_tokens"] > 0
    tools = jsonl(tmp_path, [TOOL_ROW], "t.jsonl")
    for train_on in ("assistant", "all"):  # the stock SmolLM2 template drops tool calls either way
        with pytest.raises(DataError, match="t.jsonl:1: the chat template drops the tool calls"):
            prepare_data(DataConfig(train=tools, train_on=train_on), tokenizer)
