"""`engine: vllm`: the same serve config, keys, limits, guardrails and routes, generated through vLLM's offline API.

MOCK, said plainly: vLLM needs a CUDA GPU and is not installed on this project's test machines, so these tests inject
a STAND-IN `vllm` package (`fake_vllm` below) into sys.modules. It keeps the documented signatures of what
serve/engines/vllm_engine.py calls (`LLM(model, tokenizer=, dtype=, seed=, enable_lora=, max_loras=, max_lora_rank=,
gpu_memory_utilization=)`, `LLM.generate(prompts, sampling_params, *, use_tqdm, lora_request)` with one
SamplingParams and one LoRARequest (or None) per prompt, `llm_engine.add_lora/remove_lora`, `TokensPrompt`,
`LoRARequest(lora_name, lora_int_id, lora_path)`, `RequestOutput.outputs[0].token_ids/finish_reason`,
`prompt_logprobs` as [None, {token: Logprob}, ...]), records every call, and answers with a fixed script per
adapter (then EOS), honouring max_tokens, stop_token_ids and stop strings the way vLLM does (the stop token and the
token that completes a stop string stay in token_ids). Everything else (the FastAPI app, uvicorn, the openai
client, the batcher, keys, limits, guardrails, the tokenizer and chat template) is the real thing. Whether vLLM
itself answers like this is NOT tested here.
"""
from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.serve_helpers import running_server, tiny_adapter, tiny_base
from tuneforge.errors import ConfigError
from tuneforge.serve.config import ServeConfig

SCRIPTS = {None: " the base model answers here.", "a": " alpha adapter says hello world.",
           "b": " bravo adapter says goodbye now."}


def fake_vllm(record: dict) -> dict[str, types.ModuleType]:
    """The stand-in modules: vllm, vllm.inputs, vllm.lora, vllm.lora.request. `record` collects the calls."""
    from transformers import AutoTokenizer

    @dataclass
    class SamplingParams:
        n: int = 1
        temperature: float = 1.0
        top_p: float = 1.0
        seed: int | None = None
        stop: str | list[str] | None = None
        stop_token_ids: list[int] | None = None
        max_tokens: int | None = 16
        logprobs: int | None = None
        prompt_logprobs: int | None = None

    @dataclass
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str = ""

        def __post_init__(self):
            if self.lora_int_id < 1:
                raise ValueError(f"id must be > 0, got {self.lora_int_id}")

    @dataclass
    class Logprob:
        logprob: float
        rank: int | None = None
        decoded_token: str | None = None

    @dataclass
    class CompletionOutput:
        index: int
        text: str
        token_ids: list[int]
        cumulative_logprob: float | None
        logprobs: list | None
        finish_reason: str | None = None
        stop_reason: int | str | None = None

    @dataclass
    class RequestOutput:
        request_id: str
        prompt: str | None
        prompt_token_ids: list[int]
        prompt_logprobs: list | None
        outputs: list[CompletionOutput]
        finished: bool = True
        lora_request: LoRARequest | None = None

    class LLMEngine:
        def add_lora(self, lora_request) -> bool:
            record["engine"].append(("add_lora", lora_request))
            return True

        def remove_lora(self, lora_id: int) -> bool:
            record["engine"].append(("remove_lora", lora_id))
            return True

    class LLM:
        def __init__(self, model: str, *, tokenizer: str | None = None, dtype: str = "auto", seed: int = 0,
                     enable_lora: bool = False, max_loras: int = 1, max_lora_rank: int = 16,
                     gpu_memory_utilization: float = 0.9, max_model_len: int | None = None):
            record["init"].append({"model": model, "tokenizer": tokenizer, "dtype": dtype, "seed": seed,
                                   "enable_lora": enable_lora, "max_loras": max_loras, "max_lora_rank": max_lora_rank,
                                   "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len})
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model)
            self.enable_lora = enable_lora
            self.llm_engine = LLMEngine()

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
            prompts = prompts if isinstance(prompts, list) else [prompts]
            params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            loras = lora_request if isinstance(lora_request, list) else [lora_request] * len(prompts)
            assert len(params) == len(prompts) == len(loras)
            if any(loras) and not self.enable_lora:
                raise ValueError("LoRA is not enabled")
            record["generate"].append({"prompts": [list(p["prompt_token_ids"]) for p in prompts], "params": params,
                                       "loras": loras})
            return [self._answer(i, list(p["prompt_token_ids"]), sp, lora)
                    for i, (p, sp, lora) in enumerate(zip(prompts, params, loras))]

        def _answer(self, index, prompt, sp, lora):
            name = lora.lora_name if lora is not None else None
            eos = self.tokenizer.eos_token_id
            script = self.tokenizer(SCRIPTS[name], add_special_tokens=False)["input_ids"] + [eos]
            stops = [sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])
            tokens, reason = [], "length"
            for token in script:
                if len(tokens) == sp.max_tokens:
                    break
                tokens.append(token)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                if token == eos or token in (sp.stop_token_ids or []) or any(s in text for s in stops):
                    reason = "stop"
                    break
            logprob = -0.2 * lora.lora_int_id if lora is not None else -0.05
            prompt_logprobs = None if sp.prompt_logprobs is None else \
                [None] + [{t: Logprob(logprob, 1)} for t in prompt[1:]]
            out = CompletionOutput(0, self.tokenizer.decode(tokens, skip_special_tokens=True), tokens, None, None,
                                   reason)
            return RequestOutput(str(index), None, prompt, prompt_logprobs, [out], True, lora)

    def TokensPrompt(prompt_token_ids):  # noqa: N802 - vLLM's TypedDict: calling it makes a dict
        return {"prompt_token_ids": prompt_token_ids}

    root = types.ModuleType("vllm")
    root.LLM, root.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    root.inputs, root.lora, lora.request = inputs, lora, request
    return {"vllm": root, "vllm.inputs": inputs, "vllm.lora": lora, "vllm.lora.request": request}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-vllm")
    record = {"init": [], "generate": [], "engine": []}
    cfg = ServeConfig(base=str(tiny_base(root / "base")), base_name="tiny", engine="vllm", dtype="bfloat16",
                      max_lora_rank=8, gpu_memory_utilization=0.5,
                      adapters=[{"name": "a", "path": str(tiny_adapter(root / "a", 1))},
                                {"name": "b", "path": str(tiny_adapter(root / "b", 2))}],
                      state_dir=str(root / "state"), batching={"window_ms": 300},
                      limits={"max_tokens_limit": 64}, guardrails={"min_mean_logprob": -0.3})
    with pytest.MonkeyPatch.context() as patch:
        for name, module in fake_vllm(record).items():
            patch.setitem(sys.modules, name, module)
        with running_server(cfg) as (url, admin, app):
            _, secret = app.state.tuneforge.store.create_key("client")
            yield {"url": url, "admin": admin, "key": secret, "root": root, "record": record}


def client(server, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=key or server["key"], max_retries=0)


def tokenizer(server):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(server["root"] / "base")


def generations(server) -> list[dict]:
    """The fake's generate calls, scoring passes (prompt_logprobs) left out."""
    return [c for c in server["record"]["generate"] if c["params"][0].prompt_logprobs is None]


def test_vllm_built_with_lora_settings_from_the_config(server):
    init = server["record"]["init"][0]  # the server's
    assert init["model"] == init["tokenizer"] == str(server["root"] / "base")
    assert init["enable_lora"] is True and init["max_loras"] == 8 and init["max_lora_rank"] == 8
    assert init["dtype"] == "bfloat16" and init["gpu_memory_utilization"] == 0.5
    added = [r for op, r in server["record"]["engine"] if op == "add_lora"]
    assert [(r.lora_name, r.lora_int_id) for r in added[:2]] == [("a", 1), ("b", 2)]
    assert [m.id for m in client(server).models.list().data] == ["tiny", "a", "b"]


def test_chat_through_vllm_uses_the_models_own_chat_template_and_counts_usage(server):
    from tuneforge.models.inference import InferenceEngine

    messages = [{"role": "user", "content": "hello there"}]
    before = len(generations(server))
    chat = client(server).chat.completions.create(model="a", messages=messages, max_tokens=20, temperature=0)
    call = generations(server)[before]
    expected_prompt = InferenceEngine(None, tokenizer(server)).prompt_ids(messages)
    assert call["prompts"] == [expected_prompt] and call["loras"][0].lora_name == "a"
    assert call["params"][0].max_tokens == 20 and call["params"][0].temperature == 0
    script = tokenizer(server)(SCRIPTS["a"], add_special_tokens=False)["input_ids"]
    assert chat.choices[0].message.content == SCRIPTS["a"] and chat.choices[0].finish_reason == "stop"
    assert chat.usage.prompt_tokens == len(expected_prompt)
    assert chat.usage.completion_tokens == len(script)  # the EOS that ended it is not counted
    assert chat.usage.total_tokens == len(expected_prompt) + len(script)


def test_requests_for_different_adapters_share_one_vllm_generate_call(server):
    before = len(generations(server))
    answers: dict = {}

    def ask(model):
        answers[model] = client(server).chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"hi {model}"}], max_tokens=16, temperature=0)

    threads = [threading.Thread(target=ask, args=(m,)) for m in ("a", "b", "tiny")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls = generations(server)[before:]
    assert len(calls) == 1 and len(calls[0]["prompts"]) == 3
    ids = {(r.lora_name if r else None): (r.lora_int_id if r else None) for r in calls[0]["loras"]}
    assert ids == {"a": 1, "b": 2, None: None}
    assert {m: answers[m].choices[0].message.content for m in answers} == \
        {"a": SCRIPTS["a"], "b": SCRIPTS["b"], "tiny": SCRIPTS[None]}


def test_max_tokens_and_stop_strings_are_honoured(server):
    c = client(server)
    script = tokenizer(server)(SCRIPTS["b"], add_special_tokens=False)["input_ids"]
    short = c.completions.create(model="b", prompt="one two", max_tokens=3, temperature=0)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    assert short.choices[0].text == tokenizer(server).decode(script[:3])
    before = len(generations(server))
    cut = c.chat.completions.create(model="b", messages=[{"role": "user", "content": "x"}], max_tokens=20,
                                    temperature=0, stop=["says"])
    assert generations(server)[before]["params"][0].stop == ["says"]
    assert cut.choices[0].message.content == " bravo adapter " and cut.choices[0].finish_reason == "stop"
    assert tokenizer(server).decode(script[: cut.usage.completion_tokens]).startswith(" bravo adapter ")
    assert cut.usage.completion_tokens < len(script)


def test_streaming_equals_the_whole_answer(server):
    messages = [{"role": "user", "content": "stream please"}]
    whole = client(server).chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    stream = client(server).chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                                    stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    for event in stream:
        usage = event.usage or usage
        pieces += [choice.delta.content or "" for choice in event.choices]
    assert "".join(pieces) == whole.choices[0].message.content and usage.completion_tokens == \
        whole.usage.completion_tokens


def test_keys_limits_and_the_low_confidence_guardrail_still_apply(server):
    with pytest.raises(openai.AuthenticationError):
        client(server, "tf-wrong").models.list()
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client(server).chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}],
                                               max_tokens=1000)
    assert info.value.body["code"] == "max_tokens_too_large"
    # the stand-in's prompt log-probs are -0.2 x the adapter's vLLM id: a (id 1) -0.2, b (id 2) -0.4; limit -0.3
    before = len(server["record"]["generate"])
    flags = {}
    for model in ("a", "b"):
        raw = client(server).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "judge me"}], max_tokens=8, temperature=0)
        flags[model] = (raw.headers.get("x-tuneforge-low-confidence"), raw.parse().model_extra["mean_logprob"])
    assert flags["a"] == (None, pytest.approx(-0.2)) and flags["b"] == ("true", pytest.approx(-0.4))
    scoring = [c for c in server["record"]["generate"][before:] if c["params"][0].prompt_logprobs == 0]
    assert [c["loras"][0].lora_name for c in scoring] == ["a", "b"]  # each answer scored under its own adapter


def test_admin_unload_and_load_map_to_remove_and_add_lora(server):
    headers = {"authorization": f"Bearer {server['admin']}"}
    engine_calls = server["record"]["engine"]
    before = len(engine_calls)
    assert httpx.delete(server["url"] + "/admin/adapters/b", headers=headers).status_code == 200
    assert engine_calls[before:] == [("remove_lora", 2)]
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="b", messages=[{"role": "user", "content": "x"}])
    loaded = httpx.post(server["url"] + "/admin/adapters", headers=headers,
                        json={"name": "b", "path": str(server["root"] / "b")})
    assert loaded.status_code == 200, loaded.text
    op, request = engine_calls[-1]
    assert op == "add_lora" and (request.lora_name, request.lora_int_id) == ("b", 2)  # same folder, same id
    again = client(server).chat.completions.create(model="b", messages=[{"role": "user", "content": "x"}],
                                                   max_tokens=16, temperature=0)
    assert again.choices[0].message.content == SCRIPTS["b"]
    other = httpx.post(server["url"] + "/admin/adapters", headers=headers,
                       json={"name": "b2", "path": str(server["root"] / "a")})
    assert other.status_code == 200 and engine_calls[-1][1].lora_int_id == 3


def test_adapters_vllm_cannot_serve_are_refused_at_load(server):
    headers = {"authorization": f"Bearer {server['admin']}"}
    root = server["root"]
    extra = tiny_adapter(root / "extra", 3, modules_to_save=["lm_head"])
    refused = httpx.post(server["url"] + "/admin/adapters", headers=headers, json={"name": "x", "path": str(extra)})
    assert refused.status_code == 400 and "full copies of modules" in refused.json()["error"]["message"]
    wide = tiny_adapter(root / "wide", 4, r=16)
    refused = httpx.post(server["url"] + "/admin/adapters", headers=headers, json={"name": "w", "path": str(wide)})
    assert refused.status_code == 400 and "above the server's max_lora_rank 8" in refused.json()["error"]["message"]
    # The refused name is free again: the same name with an adapter the engine can serve loads.
    narrow = tiny_adapter(root / "narrow", 5, r=4)
    loaded = httpx.post(server["url"] + "/admin/adapters", headers=headers, json={"name": "w", "path": str(narrow)})
    assert loaded.status_code == 200, loaded.text


def test_engine_streams_every_token_and_scores_each_row_under_the_adapter_that_wrote_it(server):
    from tuneforge.models.sources import resolve_model
    from tuneforge.serve.engines.vllm_engine import VllmEngine

    engine = VllmEngine(resolve_model(str(server["root"] / "base")), max_loras=2, max_lora_rank=8)
    engine.add_adapter("a", str(server["root"] / "a"))
    engine.add_adapter("b", str(server["root"] / "b"))
    prompt_a, prompt_b = engine.prompt_ids("same prompt"), engine.prompt_ids("same prompt")
    steps = []
    done = engine.generate([prompt_a, prompt_b], max_new_tokens=[4, 50], adapters=["a", "b"],
                           on_step=lambda rows, tokens: steps.append((rows[0], tokens[0])))
    assert [c.finish_reason for c in done] == ["length", "stop"] and len(done[0].token_ids) == 4
    assert [t for row, t in steps if row == 0] == done[0].token_ids
    assert [t for row, t in steps if row == 1][:-1] == done[1].token_ids  # then the EOS, which the answer drops
    # each answer is scored under the adapter that wrote it (the serving engine passes the job's adapter)
    scored = engine.score_rows([(prompt_a, done[0].token_ids)], adapters=["a"]) + \
        engine.score_rows([(list(prompt_b), done[1].token_ids)], adapters=["b"])
    assert [round(logp / count, 6) for logp, count in scored] == [-0.2, -0.4]
    assert engine.score_rows([(prompt_a, done[0].token_ids)], adapters=[None])[0][0] == \
        pytest.approx(-0.05 * len(done[0].token_ids))


def test_config_fields_and_validation(tmp_path):
    from pydantic import ValidationError

    cfg = ServeConfig(base="m", engine="vllm", adapters=[{"name": "a", "path": str(tmp_path)}], max_model_len=4096)
    assert cfg.max_lora_rank == 64 and cfg.gpu_memory_utilization == 0.9 and cfg.max_model_len == 4096
    with pytest.raises(ValidationError, match="gpu_memory_utilization: vllm settings, but engine is tuneforge"):
        ServeConfig(base="m", gpu_memory_utilization=0.5)
    with pytest.raises(ValidationError, match="gpu_memory_utilization"):
        ServeConfig(base="m", engine="vllm", gpu_memory_utilization=1.5)
    with pytest.raises(ValidationError, match="engine"):
        ServeConfig(base="m", engine="tgi")


def test_start_without_vllm_is_a_clear_config_error_not_a_traceback(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tuneforge.cli.main import app
    from tuneforge.serve.server import build_app

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, even where vLLM is installed
    cfg = ServeConfig(base="m", engine="vllm", state_dir=str(tmp_path / "state"))
    with pytest.raises(ConfigError, match="`engine: vllm` in the serve config needs vLLM and a GPU") as info:
        build_app(cfg)
    assert "pip install vllm" in str(info.value)
    config = tmp_path / "serve.yaml"
    config.write_text("base: m\nengine: vllm\nstate_dir: state\n")
    result = CliRunner().invoke(app, ["serve", str(config)])
    assert result.exit_code != 0 and "needs vLLM and a GPU" in result.output and "Traceback" not in result.output
