"""The low-confidence escalation guardrail: the answer's mean token log-prob (under the model or adapter that wrote
it) against a threshold -> flag (header, body, metrics, log) or refusal."""
from __future__ import annotations

import httpx
import openai
import pytest
import torch

from tests.serve_helpers import running_server, tiny_adapter, tiny_base
from tuneforge.serve.config import ServeConfig

MESSAGES = [{"role": "user", "content": "hello there"}]


def mean_logprob_by_hand(model, tokenizer, answer_ids: list[int]) -> float:
    """Forward the prompt + answer once; average log_softmax at each answer token (row t predicts token t + 1)."""
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    picked = [logp[len(prompt) - 1 + i, token].item() for i, token in enumerate(answer_ids)]
    return sum(picked) / len(picked)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-confidence")
    base, adapter = tiny_base(root / "base"), tiny_adapter(root / "a", 5)
    cfg = ServeConfig(base=str(base), base_name="tiny", state_dir=str(root / "state"),
                      guardrails={"min_mean_logprob": -0.0001},
                      adapters=[{"name": "a", "path": str(adapter), "guardrails": {"min_mean_logprob": -100.0}},
                                {"name": "strict", "path": str(adapter),
                                 "guardrails": {"min_mean_logprob": -0.0001, "low_confidence": "refuse"}}])
    with running_server(cfg) as (url, admin, app):
        _, key = app.state.tuneforge.store.create_key("client")
        yield {"url": url, "admin": admin, "key": key, "base": base, "adapter": adapter, "app": app}


def ask(server, model):
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=server["key"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=5,
                                                           temperature=0, logprobs=False)
    return raw.headers, raw.parse()


def test_mean_logprob_is_the_answer_tokens_average_under_the_model_that_wrote_it(server):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models.inference import InferenceEngine

    tokenizer = AutoTokenizer.from_pretrained(server["base"])

    def greedy_ids(model) -> tuple[str, list[int]]:  # the answer's token ids (decoded text does not round-trip)
        done = InferenceEngine(model, tokenizer).generate([MESSAGES], max_new_tokens=5, progress=False)[0]
        return done.text, done.token_ids

    base = AutoModelForCausalLM.from_pretrained(server["base"]).eval()
    headers, chat = ask(server, "tiny")
    text, answer = greedy_ids(base)
    assert chat.choices[0].message.content == text
    assert chat.model_extra["mean_logprob"] == pytest.approx(mean_logprob_by_hand(base, tokenizer, answer), abs=2e-3)
    assert chat.model_extra["low_confidence"] is True and headers["x-tuneforge-low-confidence"] == "true"

    headers, chat = ask(server, "a")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(server["base"]), server["adapter"]).eval()
    text, answer = greedy_ids(tuned)
    assert chat.choices[0].message.content == text
    assert chat.model_extra["mean_logprob"] == pytest.approx(mean_logprob_by_hand(tuned, tokenizer, answer),
                                                             abs=2e-3)
    assert chat.model_extra["low_confidence"] is False and "x-tuneforge-low-confidence" not in headers


def low_confidence_counts(server) -> dict[str, float]:
    """tuneforge_low_confidence_total per model, read from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server["url"] + "/metrics", headers={"authorization": f"Bearer {server['admin']}"}).text
    return {sample.labels["model"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "tuneforge_low_confidence_total"}


def test_refuse_mode_streaming_flag_metrics_and_log(server):
    # Counted from what this test adds: under pytest-xdist the module's other tests may or may not have run on
    # this worker's server before it.
    before = low_confidence_counts(server)
    with pytest.raises(openai.UnprocessableEntityError, match="escalate to a person") as refused:
        ask(server, "strict")
    assert refused.value.code == "low_confidence"
    chunks = list(openai.OpenAI(base_url=server["url"] + "/v1", api_key=server["key"]).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=5, temperature=0, stream=True))
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert last.model_extra["low_confidence"] is True
    after = low_confidence_counts(server)
    assert after["tiny"] == before.get("tiny", 0.0) + 1
    assert after["strict"] == before.get("strict", 0.0) + 1
    rows = server["app"].state.tuneforge.store.requests()
    strict = [r for r in rows if r["model"] == "strict"]
    assert strict[-1]["status"] == 422 and "low_confidence" in strict[-1]["guardrails"]
    flagged = [r for r in rows if r["model"] == "tiny" and r["status"] == 200]
    assert all(r["low_confidence"] == 1 and r["mean_logprob"] < -0.0001 for r in flagged)
