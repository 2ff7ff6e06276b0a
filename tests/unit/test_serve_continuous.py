"""Continuous batching in the serving engine (serve/engines/continuous.py): the KV-cache merge, requests joining a
running batch between two steps, mixed adapters, per-row limits, stop ids and streaming - every answer compared token
for token with the same request alone through `InferenceEngine.generate` (the batch-at-a-time path)."""
from __future__ import annotations

import pytest
import torch

from tests.serve_helpers import tiny_adapter
from tests.tiny_models import build_chatty_model
from tuneforge.models.decoding import left_padded
from tuneforge.models.inference import InferenceEngine
from tuneforge.serve.engines import continuous as continuous_module
from tuneforge.serve.engines.continuous import merge_caches, supports, trim_padding
from tuneforge.serve.engines.engine import Job, ServingEngine

PROMPTS = ["hello", "the quick brown fox jumps", "a", "one two three four five six", "Why is the sky blue?", "x y",
           "Tell me a story about a dragon and a knight who became friends in the end"]


@pytest.fixture(autouse=True)
def join_at_once(monkeypatch):
    """The step-by-step tests below check when each request joins: newcomers join at the next step (the grouping
    policy is tested on its own in test_newcomers_join_in_groups_or_after_a_few_steps)."""
    monkeypatch.setattr(continuous_module, "JOIN_AFTER_STEPS", 0)


@pytest.fixture()
def adapters(tmp_path):
    return {name: tiny_adapter(tmp_path / name, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))}


def _alone(serving, prompt, adapter, max_tokens, stop=()):
    """The request alone through InferenceEngine.generate (transformers' generate with adapter names once adapters
    are loaded, models/decoding.py's loop without), run on the worker thread that owns the model."""
    engine = serving.engine

    def run():
        serving._ensure_loaded({adapter} if adapter else set())
        return engine.generate([prompt], max_new_tokens=max_tokens, stop=stop,
                               adapters=[adapter] if engine.adapters else None, progress=False)[0]

    return serving.control(run).result(timeout=120)


def test_merged_caches_give_every_row_its_logits_alone(tokenizer):
    model = build_chatty_model().eval()
    engine = InferenceEngine(model, tokenizer)
    rows = [engine.prompt_ids(PROMPTS[i]) for i in (3, 1, 0, 6)]
    assert len({len(r) for r in rows}) == 4 and len(rows[3]) > len(rows[1]) + 3

    def prefill(prompts):
        from transformers import DynamicCache

        input_ids, mask, positions = left_padded(prompts, pad_id=2)
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True).logits[:, -1]
        return cache, mask, positions[:, -1:], logits

    def step(cache, mask, last, tokens):
        mask = torch.cat([mask, torch.ones((len(tokens), 1), dtype=mask.dtype)], dim=1)
        logits = model(input_ids=torch.tensor([[t] for t in tokens]), attention_mask=mask, position_ids=last + 1,
                       past_key_values=cache, use_cache=True).logits[:, -1]
        return mask, last + 1, logits

    def check(seqs, logits):
        for row, seq in enumerate(seqs):
            alone = model(input_ids=torch.tensor([seq])).logits[0, -1]
            torch.testing.assert_close(logits[row], alone, atol=1e-5, rtol=0)

    with torch.no_grad():
        cache, mask, last, logits = prefill(rows[:2])            # two rows at different lengths
        other, other_mask, other_last, other_logits = prefill([rows[2]])
        mask = merge_caches(cache, mask, other, other_mask)      # the newcomer (shorter) is left-padded
        last, logits = torch.cat([last, other_last]), torch.cat([logits, other_logits])
        seqs = [list(r) for r in rows[:3]]
        check(seqs, logits)
        for _ in range(2):
            tokens = logits.argmax(-1).tolist()
            seqs = [s + [t] for s, t in zip(seqs, tokens)]
            mask, last, logits = step(cache, mask, last, tokens)
            check(seqs, logits)
        longer, longer_mask, longer_last, longer_logits = prefill([rows[3]])
        assert longer_mask.shape[1] > mask.shape[1]
        mask = merge_caches(cache, mask, longer, longer_mask)    # now the running side is left-padded
        assert cache.layers[0].keys.shape[:3] == (4, 2, mask.shape[1]) and mask.shape[1] == len(rows[3])
        last, logits = torch.cat([last, longer_last]), torch.cat([logits, longer_logits])
        seqs.append(list(rows[3]))
        tokens = logits.argmax(-1).tolist()
        seqs = [s + [t] for s, t in zip(seqs, tokens)]
        mask, last, logits = step(cache, mask, last, tokens)
        check(seqs, logits)
        # The two rows that set the width leave: the columns that are padding for every row left are cut.
        keep = torch.tensor([0, 2])
        cache.batch_select_indices(keep)
        width = mask.shape[1]
        mask, last, logits = trim_padding(cache, mask[keep]), last[keep], logits[keep]
        assert mask.shape[1] == len(seqs[0]) < width and bool(mask[:, 0].any())
        assert cache.layers[1].values.shape[2] == mask.shape[1]
        seqs = [seqs[0], seqs[2]]
        tokens = logits.argmax(-1).tolist()
        seqs = [s + [t] for s, t in zip(seqs, tokens)]
        mask, last, logits = step(cache, mask, last, tokens)
        check(seqs, logits)


def test_a_request_sent_mid_batch_starts_at_the_next_step_with_its_answer_alone(tokenizer):
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=8, window_ms=0, max_queue=64)
    try:
        long_prompt, short_prompt = engine.prompt_ids(PROMPTS[6]), engine.prompt_ids(PROMPTS[1])
        long_alone = _alone(serving, long_prompt, None, 30)
        short_alone = _alone(serving, short_prompt, None, 5)
        assert len(long_alone.token_ids) == 30 and len(short_alone.token_ids) == 5
        streamed: list[int] = []
        seen_at: list[int] = []   # how many tokens the long request had when the late one produced each token
        late = Job(short_prompt, None, 5, on_token=lambda t: seen_at.append(len(streamed)))

        def on_long(token):
            streamed.append(token)
            if len(streamed) == 3:
                serving.submit(late)

        first = Job(long_prompt, None, 30, on_token=on_long)
        serving.submit(first)
        assert late.future.result(timeout=120).token_ids == short_alone.token_ids
        assert first.future.result(timeout=120).token_ids == long_alone.token_ids
        # Joined right after the long request's 3rd token (prefill: its own first token), then one token per step.
        assert seen_at == [3, 4, 5, 6, 7]
        assert first.started < late.started < late.first_token and late.future.done()
        assert streamed == long_alone.token_ids
    finally:
        serving.close()


def test_mixed_adapters_and_base_rows_joining_at_different_steps_equal_each_alone(tokenizer, adapters):
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    sizes: list[int] = []
    serving = ServingEngine(engine, max_loaded=3, max_batch_size=8, window_ms=0, max_queue=64, on_batch=sizes.append)
    try:
        for name in ("a", "b", "c"):
            serving.control(lambda n=name: serving.register(n, adapters[n])).result()
        # (prompt, adapter, max_tokens, joins after the first request's n-th token)
        plan = [(6, "a", 24, None), (1, "b", 6, 2), (3, None, 9, 2), (4, "a", 5, 5), (0, "c", 7, 8), (5, None, 3, 8),
                (2, "b", 1, 11)]
        prompts = [engine.prompt_ids(PROMPTS[p]) for p, *_ in plan]
        alone = [_alone(serving, prompt, adapter, limit) for prompt, (_, adapter, limit, _) in zip(prompts, plan)]
        assert len(alone[0].token_ids) == 24  # the first request runs long enough for every join
        jobs = [Job(prompt, adapter, limit) for prompt, (_, adapter, limit, _) in zip(prompts, plan)]
        streamed: list[int] = []
        started_at: dict[int, int] = {}

        def on_first(token):
            streamed.append(token)
            for index, (*_, after) in enumerate(plan):
                if after == len(streamed):
                    serving.submit(jobs[index])

        for index, job in enumerate(jobs[1:], start=1):
            job.on_token = lambda t, i=index: started_at.setdefault(i, len(streamed))
        jobs[0].on_token = on_first
        serving.submit(jobs[0])
        got = [job.future.result(timeout=120) for job in jobs]
        assert [c.token_ids for c in got] == [c.token_ids for c in alone]
        assert [c.finish_reason for c in got] == [c.finish_reason for c in alone]
        assert started_at == {i: after for i, (*_, after) in enumerate(plan) if after is not None}
        assert max(sizes) >= 5, sizes  # several rows ran together
        # The adapters do change answers, so the exactness above is not base == base.
        base_answers = [_alone(serving, p, None, 6).token_ids for p in prompts[:2]]
        assert base_answers[0] != alone[0].token_ids[:6] or base_answers[1] != alone[1].token_ids
    finally:
        serving.close()


def test_a_request_whose_adapter_does_not_fit_the_pool_waits_for_rows_to_leave(tokenizer, adapters):
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=8, window_ms=0, max_queue=64)
    try:
        for name in ("a", "b", "c"):
            serving.control(lambda n=name: serving.register(n, adapters[n], load=False)).result()
        prompts = [engine.prompt_ids(PROMPTS[i]) for i in (6, 1, 3, 0)]
        plan = [("a", 12), ("b", 4), ("c", 4), (None, 4)]  # c needs a third adapter while a and b run
        alone = [_alone(serving, p, n, k) for p, (n, k) in zip(prompts, plan)]
        jobs = [Job(p, n, k) for p, (n, k) in zip(prompts, plan)]
        streamed: list[int] = []
        started_at: dict[int, int] = {}

        def on_first(token):
            streamed.append(token)
            if len(streamed) == 1:
                for job in jobs[1:]:
                    serving.submit(job)

        jobs[0].on_token = on_first
        for index, job in enumerate(jobs[1:], start=1):
            job.on_token = lambda t, i=index: started_at.setdefault(i, len(streamed))
        serving.submit(jobs[0])
        assert [j.future.result(timeout=120).token_ids for j in jobs] == [c.token_ids for c in alone]
        # Sent during a's prefill, b joins at the next step (a has 2 tokens) and leaves with 4 tokens (a has 5); c, a
        # third adapter, waits for b's row to leave (b is evicted for it), and the base request behind it waits too.
        assert started_at == {1: 2, 2: 5, 3: 5}
        assert sorted(serving.loaded) == ["a", "c"]
    finally:
        serving.close()


def test_per_row_limits_stop_ids_stop_strings_and_streaming(tokenizer):
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=4, window_ms=0, max_queue=64)
    try:
        prompts = [engine.prompt_ids(p) for p in PROMPTS]
        free = [_alone(serving, p, None, 12).token_ids for p in prompts]
        # Stop ids that two answers produce mid-way (the model's generation config names them, like an eos).
        stop_ids = {free[3][4], free[5][6]}
        engine.model.generation_config.eos_token_id = [2, *stop_ids]
        limits = [12, 1, 7, 12, 3, 12, 10]
        text = tokenizer.decode(free[0], skip_special_tokens=True)
        stops = [(text[4:7],), (), (), (), (), (), ()]  # a stop string: cuts the text, the tokens run on
        alone = [_alone(serving, p, None, k, s) for p, k, s in zip(prompts, limits, stops)]
        assert len(alone[3].token_ids) <= 4 and len(alone[5].token_ids) <= 6
        assert alone[3].finish_reason == alone[5].finish_reason == "stop"
        assert alone[0].finish_reason == "stop" and alone[0].text != tokenizer.decode(alone[0].token_ids)
        streams: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
        jobs = [Job(p, None, k, stop=s, on_token=streams[i].append)
                for i, (p, k, s) in enumerate(zip(prompts, limits, stops))]
        # max_batch_size 4: the first four start together, the rest join as rows leave.
        for job in jobs:
            serving.submit(job)
        got = [job.future.result(timeout=120) for job in jobs]
        assert [(c.token_ids, c.finish_reason, c.text) for c in got] == \
            [(c.token_ids, c.finish_reason, c.text) for c in alone]
        for index, completion in enumerate(got):
            stream = streams[index]
            assert len(stream) <= limits[index]
            # Every new token in order, the stop id last when one ended the row, nothing after it.
            if stop_ids & set(stream) or 2 in stream:
                assert stream[:-1] == completion.token_ids and stream[-1] in {2, *stop_ids}
            else:
                assert stream[: len(completion.token_ids)] == completion.token_ids
                assert len(stream) == limits[index] or completion.finish_reason == "stop"
    finally:
        serving.close()


def test_a_broken_stream_fails_its_own_request_only(tokenizer):
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=4, window_ms=50, max_queue=64)
    try:
        prompts = [engine.prompt_ids(p) for p in PROMPTS[:3]]
        alone = [_alone(serving, p, None, 6).token_ids for p in prompts]
        seen: list[int] = []

        def broken(token):
            seen.append(token)
            if len(seen) == 2:
                raise RuntimeError("the client went away")

        jobs = [Job(p, None, 6, on_token=broken if i == 1 else None) for i, p in enumerate(prompts)]
        for job in jobs:
            serving.submit(job)
        with pytest.raises(RuntimeError, match="the client went away"):
            jobs[1].future.result(timeout=60)
        assert [jobs[i].future.result(timeout=60).token_ids for i in (0, 2)] == [alone[0], alone[2]]
        assert seen == alone[1][:2]
    finally:
        serving.close()


def test_controls_and_sampled_requests_wait_for_the_rows_admitted_before_them(tokenizer, adapters):
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=8, window_ms=0, max_queue=64)
    try:
        prompt = engine.prompt_ids(PROMPTS[6])
        order: list[str] = []
        first = Job(prompt, None, 8, on_token=lambda t: order.append("greedy"))
        sampled = Job(prompt, None, 2, temperature=0.7, seed=1, on_token=lambda t: order.append("sampled"))
        after = Job(prompt, "a", 2, on_token=lambda t: order.append("after"))

        def on_token(token):
            order.append("greedy")
            if order.count("greedy") == 2:
                serving.submit(sampled)
                serving.control(lambda: (order.append("register"), serving.register("a", adapters["a"])))
                serving.submit(after)

        first.on_token = on_token
        serving.submit(first)
        for job in (first, sampled, after):
            job.future.result(timeout=120)
        assert order == ["greedy"] * 8 + ["sampled"] * 2 + ["register"] + ["after"] * 2
        assert after.future.result().token_ids == _alone(serving, prompt, "a", 2).token_ids
    finally:
        serving.close()


def test_continuous_off_keeps_the_batch_at_a_time_path(tokenizer):
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=4, window_ms=0, max_queue=64, continuous=False)
    calls: list[int] = []
    generate = engine.generate
    engine.generate = lambda prompts, **kw: calls.append(len(prompts)) or generate(prompts, **kw)
    try:
        prompt = engine.prompt_ids(PROMPTS[0])
        assert serving.submit(Job(prompt, None, 3)).result(timeout=60).token_ids
        assert calls == [1]
    finally:
        serving.close()


def test_engines_the_loop_cannot_serve_keep_the_batch_path(tokenizer):
    from types import SimpleNamespace

    from transformers import MistralConfig, MistralForCausalLM

    engine = InferenceEngine(build_chatty_model(), tokenizer)
    assert supports(engine)
    sliding = MistralForCausalLM(MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                               sliding_window=4))
    assert not supports(InferenceEngine(sliding, tokenizer))  # a sliding-window cache cannot be left-padded
    assert not supports(SimpleNamespace(stop_ids={2}, prompt_ids=list))  # llama.cpp-like: no torch model
    engine.continuous_batching = False
    assert not supports(engine)


def test_scored_requests_get_the_mean_logprob_of_the_batch_path(tokenizer, adapters):
    results = {}
    for continuous in (True, False):
        engine = InferenceEngine(build_chatty_model(), tokenizer)
        serving = ServingEngine(engine, max_loaded=2, max_batch_size=4, window_ms=50, max_queue=64,
                                continuous=continuous)
        try:
            serving.control(lambda s=serving: s.register("a", adapters["a"])).result()
            jobs = [Job(engine.prompt_ids(PROMPTS[i]), name, 5, score=True) for i, name in ((6, "a"), (1, None))]
            for job in jobs:
                serving.submit(job)
            results[continuous] = [(j.future.result(timeout=60).token_ids, j.mean_logprob) for j in jobs]
        finally:
            serving.close()
    for (tokens, logprob), (expected_tokens, expected) in zip(results[True], results[False]):
        assert tokens == expected_tokens and logprob is not None
        assert logprob == pytest.approx(expected, abs=1e-5)


def test_newcomers_join_in_groups_or_after_a_few_steps(tokenizer, monkeypatch):
    monkeypatch.setattr(continuous_module, "JOIN_AFTER_STEPS", 4)
    engine = InferenceEngine(build_chatty_model(), tokenizer)
    serving = ServingEngine(engine, max_loaded=2, max_batch_size=9, window_ms=0, max_queue=64)
    try:
        prompts = [engine.prompt_ids(p) for p in (PROMPTS[6], PROMPTS[1], PROMPTS[3], PROMPTS[4])]
        alone = [_alone(serving, prompts[0], None, 30)] + [_alone(serving, p, None, 5) for p in prompts[1:]]
        streamed: list[int] = []
        started_at: dict[int, int] = {}
        late = [Job(p, None, 5, on_token=lambda t, i=i: started_at.setdefault(i, len(streamed)))
                for i, p in enumerate(prompts[1:], start=1)]

        def on_long(token):
            streamed.append(token)
            if len(streamed) == 3:
                serving.submit(late[0])  # alone: 1 waiting < a quarter of 8 free rows -> held for 4 steps
            if len(streamed) == 12:
                serving.submit(late[1])  # together: 2 waiting = a quarter of 8 free rows -> join at once
                serving.submit(late[2])

        first = Job(prompts[0], None, 30, on_token=on_long)
        serving.submit(first)
        got = [first.future.result(timeout=120)] + [job.future.result(timeout=120) for job in late]
        assert [c.token_ids for c in got] == [c.token_ids for c in alone]
        assert started_at == {1: 3 + 4, 2: 12, 3: 12}
    finally:
        serving.close()
