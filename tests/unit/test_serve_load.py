"""A bounded load test on 127.0.0.1: 50 concurrent clients x 2 requests over a mix of adapters, streaming and not.
No 5xx, every request logged, rate limits hold; and the temperature-0 response cache with its hit rate."""
from __future__ import annotations

import asyncio
import time

import httpx
import openai

from tests.serve_helpers import running_server, tiny_adapter, tiny_base
from tuneforge.serve.config import ServeConfig

CLIENTS, EACH = 50, 2


def test_fifty_concurrent_clients_no_5xx_no_lost_rows_limits_hold(tmp_path):
    cfg = ServeConfig(base=str(tiny_base(tmp_path / "base")), base_name="tiny",
                      adapters=[{"name": f"ad{i}", "path": str(tiny_adapter(tmp_path / f"ad{i}", i))} for i in (1, 2)],
                      state_dir=str(tmp_path / "state"), batching={"window_ms": 20, "max_batch_size": 32})
    models = ["tiny", "ad1", "ad2"]
    with running_server(cfg) as (base, _admin, app):
        store = app.state.tuneforge.store
        secret = store.create_key("load")[1]
        limited = store.create_key("limited", rpm=5)[1]

        async def one_client(index: int, results: list):
            c = openai.AsyncOpenAI(base_url=base + "/v1", api_key=secret, max_retries=0, timeout=300)
            for turn in range(EACH):
                model = models[(index + turn) % 3]
                messages = [{"role": "user", "content": f"client {index} turn {turn}"}]
                if (index + turn) % 2:
                    stream = await c.chat.completions.create(model=model, messages=messages, max_tokens=4,
                                                             temperature=0, stream=True)
                    text = "".join([e.choices[0].delta.content or "" async for e in stream if e.choices])
                    results.append(("stream", model, text))
                else:
                    answer = await c.chat.completions.create(model=model, messages=messages, max_tokens=4,
                                                             temperature=0)
                    results.append(("plain", model, answer.id))
            await c.close()

        async def limited_client(statuses: list):
            started = time.monotonic()
            async with httpx.AsyncClient(timeout=300) as http:
                for _ in range(8):
                    response = await http.post(base + "/v1/chat/completions",
                                               headers={"authorization": f"Bearer {limited}"},
                                               json={"model": "tiny", "max_tokens": 2,
                                                     "messages": [{"role": "user", "content": "hi"}]})
                    statuses.append(response.status_code)
            statuses.append(time.monotonic() - started)

        async def main():
            results, statuses = [], []
            await asyncio.gather(*(one_client(i, results) for i in range(CLIENTS)), limited_client(statuses))
            return results, statuses

        results, statuses = asyncio.run(main())  # any 5xx raises openai.InternalServerError here
        assert len(results) == CLIENTS * EACH
        elapsed = statuses.pop()
        # 5 per minute: the burst of 5, plus what the bucket refilled (one per 12 s) while the load ran.
        assert 5 <= statuses.count(200) <= 5 + int(elapsed / 12) + 1, (statuses, elapsed)
        assert statuses.count(429) >= 8 - (5 + int(elapsed / 12) + 1) and set(statuses) <= {200, 429}
        allowed = statuses.count(200)
        rows = store.requests()
        assert sum(1 for r in rows if r["key_id"] and r["status"] == 200) == CLIENTS * EACH + allowed
        assert not [r for r in rows if r["status"] >= 500]
        logged_ids = {r["id"] for r in rows}
        assert all(result[2] in logged_ids for result in results if result[0] == "plain")
        metrics = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {_admin}"}).text
        batch_sum = float(next(line.split()[-1] for line in metrics.splitlines()
                               if line.startswith("tuneforge_batch_size_sum")))
        batch_count = float(next(line.split()[-1] for line in metrics.splitlines()
                                 if line.startswith("tuneforge_batch_size_count")))
        assert batch_sum / batch_count > 2, "concurrent requests should share batches"


def test_temperature_zero_cache_hits_are_counted(tmp_path):
    cfg = ServeConfig(base=str(tiny_base(tmp_path / "base")), base_name="tiny", state_dir=str(tmp_path / "state"),
                      cache_size=8)
    with running_server(cfg) as (base, admin, app):
        secret = app.state.tuneforge.store.create_key("c")[1]
        c = openai.OpenAI(base_url=base + "/v1", api_key=secret, max_retries=0)
        ask = {"model": "tiny", "messages": [{"role": "user", "content": "cache me"}], "max_tokens": 5,
               "temperature": 0}
        first, second = c.chat.completions.create(**ask), c.chat.completions.create(**ask)
        assert first.choices[0].message.content == second.choices[0].message.content and first.id != second.id
        c.chat.completions.create(**{**ask, "temperature": 0.7, "seed": 1})  # sampled: not cached
        metrics = httpx.get(base + "/metrics", headers={"authorization": f"Bearer {admin}"}).text
        assert 'tuneforge_cache_lookups_total{result="hit"} 1.0' in metrics
        assert 'tuneforge_cache_lookups_total{result="miss"} 1.0' in metrics
