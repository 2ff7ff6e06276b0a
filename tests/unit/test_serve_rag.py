"""Retrieval-augmented chat over real HTTP with the official `openai` client: model rag/INDEX/MODEL retrieves from
a tiny index, prompts the tiny model with the numbered passages and returns the sources and citations."""
from __future__ import annotations

import json

import openai
import pytest

from tests.rag_helpers import HashEmbedder, build_hash_index
from tests.serve_helpers import running_server, tiny_adapter, tiny_base
from tuneforge.rag.answer import cited_numbers
from tuneforge.serve.config import ServeConfig

QUESTION = "Why do sea otters hold hands while sleeping?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-rag")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tuneforge.rag.embed.Embedder", HashEmbedder)  # no 30 s model load in a unit test
        cfg = ServeConfig(base=str(tiny_base(root / "base")), base_name="tiny",
                          adapters=[{"name": "a", "path": str(tiny_adapter(root / "a", 1))}],
                          state_dir=str(root / "state"), rag={"indexes": {"animals": str(build_hash_index(root))},
                                                              "k": 3})
        with running_server(cfg) as (base, _admin, app):
            _, secret = app.state.tuneforge.store.create_key("client")
            yield {"client": openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0),
                   "store": app.state.tuneforge.store, "base": base}


def test_rag_chat_returns_sources_and_citations_and_prompts_with_the_passages(server):
    chat = server["client"].chat.completions.create(model="rag/animals/tiny", max_tokens=8, temperature=0,
                                                    messages=[{"role": "user", "content": QUESTION}])
    assert chat.model == "rag/animals/tiny"
    sources = chat.sources
    assert [s["number"] for s in sources] == [1, 2, 3]
    assert sources[0]["path"].endswith("otter.md") and sources[0]["heading"] == "Otter"
    assert all(isinstance(s["chunk_id"], int) and s["end_char"] > s["start_char"] for s in sources)
    text = chat.choices[0].message.content
    assert chat.citations == cited_numbers(text)
    assert [s["cited"] for s in sources] == [s["number"] in chat.citations for s in sources]
    logged = server["store"].request(chat.id)
    prompt = json.loads(logged["prompt"])
    assert logged["model"] == "tiny" and prompt[0]["content"].startswith("Answer the question using only")
    assert prompt[-1]["content"].startswith("Passages:\n[1] (otter: Otter)\n# Otter\nSea otters hold hands")
    assert prompt[-1]["content"].endswith(f"Question: {QUESTION}")


def test_rag_streaming_matches_and_carries_the_sources(server):
    ask = {"model": "rag/animals/a", "max_tokens": 8, "temperature": 0,
           "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]}
    whole = server["client"].chat.completions.create(**ask)
    events = list(server["client"].chat.completions.create(**ask, stream=True))
    assert all(e.model == "rag/animals/a" for e in events)
    assert [s["chunk_id"] for s in events[0].sources] == [s["chunk_id"] for s in whole.sources]
    assert "".join(c.delta.content or "" for e in events for c in e.choices) == whole.choices[0].message.content
    last = next(e for e in events if e.choices and e.choices[0].finish_reason)
    assert last.citations == whole.citations and last.sources == whole.sources


def test_models_list_names_each_index_with_each_model_the_key_may_use(server):
    listed = {m.id: m for m in server["client"].models.list().data}
    assert {"tiny", "a", "rag/animals/tiny", "rag/animals/a"} <= set(listed)
    assert listed["rag/animals/a"].parent == "a"
    _, only_a = server["store"].create_key("only-a", models=["a"])
    narrow = openai.OpenAI(base_url=server["base"] + "/v1", api_key=only_a, max_retries=0)
    assert {m.id for m in narrow.models.list().data} == {"a", "rag/animals/a"}


def test_unknown_rag_names_are_openai_404s(server):
    for name in ("rag/nowhere/tiny", "rag/animals", "rag/animals/nope"):
        with pytest.raises(openai.NotFoundError) as info:
            server["client"].chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}],
                                                     max_tokens=2)
        assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        server["client"].chat.completions.create(model="rag/animals/tiny", max_tokens=2,
                                                 messages=[{"role": "system", "content": "x"}])
    assert info.value.body["code"] == "no_query"


def test_serve_config_rag_section_rebases_and_checks_names(tmp_path):
    from tuneforge.errors import ConfigError
    from tuneforge.serve.config import load_serve_config

    path = tmp_path / "serve.yaml"
    path.write_text("base: tiny\nrag:\n  indexes: {docs: ./idx}\n  k: 4\n")
    cfg = load_serve_config(path)
    assert cfg.rag.indexes == {"docs": str(tmp_path / "idx")} and cfg.rag.k == 4 and cfg.rag.mode == "hybrid"
    path.write_text("base: tiny\nrag:\n  indexes: {a/b: ./idx}\n")
    with pytest.raises(ConfigError, match="no slashes"):
        load_serve_config(path)
