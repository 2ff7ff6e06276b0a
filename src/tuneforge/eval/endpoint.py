"""An OpenAI-compatible chat-completions endpoint as an evaluation model (and as the judge's transport).

stdlib only (urllib + threads): evaluation must not pull in a client library, and the request is one POST.

- Requests use temperature 0 and `max_tokens`; the answer is `choices[0].message.content`.
- At most `concurrency` requests are in flight; results come back in the items' order.
- 408, 409, 429 and 5xx responses, connection errors and timeouts are retried `retries` times with exponential
  backoff (`backoff` s, doubling, capped at 30 s; a numeric Retry-After header is honoured up to the cap).
  Any other 4xx (bad key, unknown model) fails at once: retrying cannot fix it.
- Label-token log-probabilities are not requested: servers differ in whether and how they return them for a
  forced continuation, so endpoint label tasks report accuracy and macro-F1 from the answer text and say that
  calibration is unavailable.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tuneforge.errors import ConfigError, TuneforgeError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 30.0


class EndpointError(TuneforgeError):
    """The endpoint refused a request or kept failing after every retry."""


def chat_url(url: str) -> str:
    """Accept a server root, a `/v1` base URL or the full chat-completions URL."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def api_key_from_env(var: str | None) -> str | None:
    if not var:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"--api-key-env {var}: the environment variable is not set or empty",
                          hint=f"export {var}=... before running, or leave --api-key-env out for an open endpoint")
    return value


@dataclass
class EndpointModel:
    url: str
    model: str
    api_key: str | None = None
    concurrency: int = 4
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    supports_logprobs: bool = False
    requests_made: int = field(default=0, init=False)

    @property
    def name(self) -> str:
        return f"{self.model} @ {self.url}"

    def chat(self, messages: list[dict], max_tokens: int, temperature: float = 0.0) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": temperature,
                           "max_tokens": max_tokens}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        target = chat_url(self.url)
        last = ""
        for attempt in range(self.retries + 1):
            self.requests_made += 1
            wait = min(MAX_BACKOFF_S, self.backoff * 2**attempt)
            try:
                request = urllib.request.Request(target, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return _content(payload, target)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code not in RETRY_STATUS:
                    raise EndpointError(f"{target} answered HTTP {exc.code}: {detail}",
                                        hint="check --endpoint-model and the API key (--api-key-env)") from None
                last = f"HTTP {exc.code}: {detail}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if retry_after and retry_after.strip().replace(".", "", 1).isdigit():
                    wait = min(MAX_BACKOFF_S, float(retry_after))
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except json.JSONDecodeError as exc:
                raise EndpointError(f"{target} did not return JSON ({exc.msg})") from None
            if attempt < self.retries:
                time.sleep(wait)
        raise EndpointError(f"{target} failed after {self.retries + 1} attempts; last error {last}",
                            hint="raise --timeout or --retries, or lower --concurrency")

    def answer(self, items: list[dict], *, max_new_tokens: int, batch_size: int = 0,
               description: str = "requesting") -> list[str]:
        """Greedy (temperature 0) answers to evaluation items: the interface the eval pipeline shares with the
        inference engine."""
        from tuneforge.console import make_progress

        def one(item: dict) -> str:
            messages = item["messages"] or [{"role": "user", "content": item["prompt"]}]
            return self.chat(messages, max_new_tokens)

        answers: list[str] = [""] * len(items)
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool, make_progress(True) as bar:
            task = bar.add_task(f"{description} ({self.model})", total=len(items))
            futures = {pool.submit(one, item): i for i, item in enumerate(items)}
            for future, index in futures.items():
                answers[index] = future.result()
                bar.advance(task)
        return answers

    def sample(self, items: list[dict], *, n: int, max_new_tokens: int, temperature: float, batch_size: int = 0,
               description: str = "sampling") -> list[list[str]]:
        """n answers per item at `temperature` (requests run `concurrency` at a time)."""
        flat = [item for item in items for _ in range(n)]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            texts = list(pool.map(lambda item: self.chat(item["messages"] or [{"role": "user", "content":
                                                                                item["prompt"]}],
                                                          max_new_tokens, temperature), flat))
        return [texts[i * n:(i + 1) * n] for i in range(len(items))]

    def label_logprobs(self, items: list[dict], labels: list[str], batch_size: int = 0) -> None:
        return None


def _content(payload, target: str) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"{target}: response has no choices[0].message.content: {str(payload)[:200]}") from None
    return content or ""
