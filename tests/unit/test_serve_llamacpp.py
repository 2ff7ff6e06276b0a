"""`engine: llamacpp`: a GGUF export behind the same OpenAI routes (chat, completions, streaming, stop,
max_tokens), its answers equal to llama.cpp's own greedy decoding; adapters are refused clearly."""
from __future__ import annotations

import importlib.util

import httpx
import openai
import pytest

from tests.serve_helpers import running_server, tiny_base
from tuneforge.errors import ConfigError
from tuneforge.serve.config import ServeConfig

pytestmark = [pytest.mark.llamacpp, pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                                       reason="llama-cpp-python is not installed")]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export.gguf import write_gguf

    root = tmp_path_factory.mktemp("serve-gguf")
    folder = tiny_base(root / "base")
    path = root / "tiny-f16.gguf"
    write_gguf(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), path, "f16")
    return path


def test_gguf_served_behind_the_openai_routes(gguf, tmp_path):
    from tuneforge.models.llamacpp import LlamaCppModel

    cfg = ServeConfig(base=str(gguf), engine="llamacpp", base_name="tiny-gguf", state_dir=str(tmp_path / "state"),
                      guardrails={"min_mean_logprob": -0.0001})
    reference = LlamaCppModel(gguf)
    messages = [{"role": "user", "content": "hello there"}]
    expected_ids, _ = reference.greedy(reference.prompt_ids(messages), 6)
    expected = reference.decode(expected_ids)
    with running_server(cfg) as (url, admin, app):
        _, key = app.state.tuneforge.store.create_key("client")
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny-gguf"]
        raw = client.chat.completions.with_raw_response.create(model="tiny-gguf", messages=messages, max_tokens=6,
                                                               temperature=0)
        chat = raw.parse()
        assert chat.choices[0].message.content == expected
        assert chat.usage.completion_tokens == len(expected_ids) <= 6
        # a random tiny model is never this sure of itself: flagged as low confidence, header and body
        assert raw.headers["x-tuneforge-low-confidence"] == "true"
        assert chat.model_extra["low_confidence"] is True and chat.model_extra["mean_logprob"] < -0.0001
        stream = client.chat.completions.create(model="tiny-gguf", messages=messages, max_tokens=6, temperature=0,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
        short = client.completions.create(model="tiny-gguf", prompt="one two", max_tokens=2, temperature=0)
        assert short.usage.completion_tokens <= 2
        if len(expected) > 3:
            stop = expected[1:3]
            cut = client.chat.completions.create(model="tiny-gguf", messages=messages, max_tokens=6, temperature=0,
                                                 stop=[stop])
            assert cut.choices[0].message.content == expected[: expected.find(stop)]
            assert cut.choices[0].finish_reason == "stop"
        refused = httpx.post(url + "/admin/adapters", headers={"authorization": f"Bearer {admin}"},
                             json={"name": "x", "path": str(tmp_path)})
        assert refused.status_code == 400 and "serves no adapters" in refused.json()["error"]["message"]


def test_adapters_with_llamacpp_are_refused_in_the_config(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="engine llamacpp serves one GGUF file and no adapters"):
        ServeConfig(base="m.gguf", engine="llamacpp", adapters=[{"name": "a", "path": str(tmp_path)}])


def test_llamacpp_needs_a_gguf_base(tmp_path):
    from tuneforge.serve.server import model_loader

    cfg = ServeConfig(base=str(tiny_base(tmp_path / "base")), engine="llamacpp", state_dir=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="engine llamacpp serves a .gguf file"):
        model_loader(cfg)()
