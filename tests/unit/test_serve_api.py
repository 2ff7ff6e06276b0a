"""The OpenAI-compatible server, driven by the official `openai` client against a real uvicorn on 127.0.0.1."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.serve_helpers import running_server, tiny_adapter, tiny_base
from tuneforge.serve.config import ServeConfig


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    cfg = ServeConfig(base=str(tiny_base(root / "base")), base_name="tiny",
                      adapters=[{"name": "a", "path": str(tiny_adapter(root / "a", 1))},
                                {"name": "b", "path": str(tiny_adapter(root / "b", 2))}],
                      state_dir=str(root / "state"), batching={"window_ms": 30},
                      limits={"max_tokens_limit": 64, "max_body_bytes": 20000})
    with running_server(cfg) as (base, admin, app):
        store = app.state.tuneforge.store
        _, secret = store.create_key("client")
        yield {"url": base, "admin": admin, "key": secret, "root": root, "store": store, "app": app}


def client(server, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=key or server["key"], max_retries=0)


def test_models_lists_base_and_adapters(server):
    assert [m.id for m in client(server).models.list().data] == ["tiny", "a", "b"]


def test_chat_completion_usage_and_request_id(server):
    response = client(server).chat.completions.with_raw_response.create(
        model="a", messages=[{"role": "user", "content": "hello"}], max_tokens=5, temperature=0)
    chat = response.parse()
    assert response.headers["x-request-id"].startswith("req_")
    assert chat.id.startswith("chatcmpl-") and chat.model == "a"
    assert chat.usage.completion_tokens <= 5 and chat.usage.prompt_tokens > 0
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert chat.choices[0].finish_reason in ("stop", "length")
    again = client(server).chat.completions.create(model="a", messages=[{"role": "user", "content": "hello"}],
                                                   max_tokens=5, temperature=0)
    assert again.choices[0].message.content == chat.choices[0].message.content


def test_streaming_equals_non_streaming(server):
    messages = [{"role": "user", "content": "the quick brown fox"}]
    whole = client(server).chat.completions.create(model="b", messages=messages, max_tokens=8, temperature=0)
    stream = client(server).chat.completions.create(model="b", messages=messages, max_tokens=8, temperature=0,
                                                    stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for event in stream:
        if event.usage:
            usage = event.usage
        for choice in event.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    raw = httpx.post(server["url"] + "/v1/completions", headers={"authorization": f"Bearer {server['key']}"},
                     json={"model": "tiny", "prompt": "hi", "max_tokens": 3, "stream": True}).text
    assert raw.rstrip().endswith("data: [DONE]")


def test_completions_max_tokens_and_stop(server):
    c = client(server)
    full = c.completions.create(model="tiny", prompt="one two three", max_tokens=12, temperature=0)
    assert full.usage.completion_tokens <= 12 and full.object == "text_completion"
    short = c.completions.create(model="tiny", prompt="one two three", max_tokens=3, temperature=0)
    assert short.usage.completion_tokens <= 3
    assert full.choices[0].text.startswith(short.choices[0].text)
    text = full.choices[0].text
    if len(text) > 4:
        stop = text[2:4]
        cut = c.completions.create(model="tiny", prompt="one two three", max_tokens=12, temperature=0, stop=[stop])
        assert cut.choices[0].text == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(server):
    c = client(server)
    ask = {"model": "a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "temperature": 1.0,
           "seed": 7}
    assert c.chat.completions.create(**ask).choices[0].message.content == \
        c.chat.completions.create(**ask).choices[0].message.content


def test_auth_errors(server):
    with pytest.raises(openai.AuthenticationError) as info:
        client(server, "tf-wrong").models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    assert set(info.value.body) == {"message", "type", "param", "code"}
    missing = httpx.get(server["url"] + "/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"


def test_client_mistakes_get_openai_errors_not_500(server):
    c = client(server)
    with pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    with pytest.raises(openai.UnprocessableEntityError) as info:
        c.chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.UnprocessableEntityError):
        c.chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], max_tokens=1000)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        c.chat.completions.create(model="a", messages=[])
    with pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model="tiny", prompt="", max_tokens=2)
    assert info.value.body["code"] == "empty_prompt"
    with pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model="tiny", prompt=["a", "b"], max_tokens=2)
    assert info.value.body["param"] == "prompt"
    headers = {"authorization": f"Bearer {server['key']}", "content-type": "application/json"}
    bad = httpx.post(server["url"] + "/v1/chat/completions", headers=headers, content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    big = httpx.post(server["url"] + "/v1/chat/completions", headers=headers,
                     json={"model": "a", "messages": [{"role": "user", "content": "x" * 30000}]})
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    assert httpx.get(server["url"] + "/nope", headers=headers).status_code == 404
    assert httpx.get(server["url"] + "/health").json()["status"] == "ok"


def test_admin_routes_need_an_admin_key(server):
    headers = {"authorization": f"Bearer {server['key']}"}
    forbidden = httpx.get(server["url"] + "/admin/adapters", headers=headers)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "admin_required"
    assert httpx.get(server["url"] + "/metrics", headers=headers).status_code == 403
    ok = httpx.get(server["url"] + "/admin/adapters", headers={"authorization": f"Bearer {server['admin']}"})
    assert ok.status_code == 200 and {a["name"] for a in ok.json()["adapters"]} == {"a", "b"}
