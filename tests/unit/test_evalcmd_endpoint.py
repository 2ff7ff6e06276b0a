"""The endpoint client, an endpoint evaluation, the LLM judge and the harness message, against a stub
OpenAI-compatible server the test starts on 127.0.0.1 (stdlib http.server in a thread, canned answers)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from tuneforge.errors import TuneforgeError
from tuneforge.eval.endpoint import EndpointError, EndpointModel, chat_url

MAX_REQUESTS = 400


class Stub:
    """Answers chat completions from `reply(model, prompt)`; `fail_first` requests get HTTP 503 first."""

    def __init__(self, reply, fail_first: int = 0, status: int = 200):
        self.reply, self.fail_first, self.status = reply, fail_first, status
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    count = len(stub.requests)
                assert count <= MAX_REQUESTS, "runaway client"
                if count <= stub.fail_first or stub.status != 200:
                    code = 503 if count <= stub.fail_first else stub.status
                    self.send_response(code)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "nope"}')
                    return
                text = stub.reply(body["model"], body["messages"][-1]["content"])
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_chat_url_forms():
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_client_retries_then_succeeds_and_keeps_order(monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sekrit")
    with Stub(lambda model, prompt: prompt.upper(), fail_first=2) as stub:
        client = EndpointModel(stub.url, "m", api_key="sekrit", concurrency=3, retries=3, backoff=0.01)
        items = [{"messages": [{"role": "user", "content": f"q{i}"}], "prompt": None} for i in range(5)]
        assert client.answer(items, max_new_tokens=5) == ["Q0", "Q1", "Q2", "Q3", "Q4"]
        assert len(stub.requests) == 7  # 2 refused with 503, then 5 answered
        body = stub.requests[-1]["body"]
        assert body["temperature"] == 0 and body["max_tokens"] == 5 and stub.requests[-1]["auth"] == "Bearer sekrit"


def test_client_gives_up_with_a_readable_error():
    with Stub(lambda m, p: "x", status=401) as stub:
        with pytest.raises(EndpointError, match="HTTP 401"):
            EndpointModel(stub.url, "m", retries=3, backoff=0.01).chat([{"role": "user", "content": "hi"}], 5)
        assert len(stub.requests) == 1  # a 401 is not retried
    with Stub(lambda m, p: "x", fail_first=100) as stub:
        with pytest.raises(EndpointError, match="failed after 3 attempts; last error HTTP 503"):
            EndpointModel(stub.url, "m", retries=2, backoff=0.01).chat([{"role": "user", "content": "hi"}], 5)


def _answer(model: str, prompt: str) -> str:
    """The evaluated 'models': 'good' answers the label in the review, 'bad' always says negative."""
    if model == "bad":
        return "negative"
    return "positive" if "great" in prompt else "Negative."


def _judge(model: str, prompt: str) -> str:
    if "[Answer" not in prompt:  # the reachability check made before generating
        return "OK"
    if "[Answer A]" in prompt:  # pairwise: strict judge prefers the answer with 'positive'; 'biased' always says A
        if model == "biased":
            return "Verdict: A"
        a = prompt.split("[Answer A]\n")[1].split("\n")[0]
        b = prompt.split("[Answer B]\n")[1].split("\n")[0]
        return "Verdict: tie" if a == b else ("Verdict: A" if "positive" in a else "Verdict: B")
    answer = prompt.split("[Answer]\n")[1].split("\n")[0]
    return "Score: 9\nReason: right" if "positive" in answer else "Reason: meh\nScore: 3"


@pytest.fixture()
def sentiment_task(tmp_path: Path) -> Path:
    rows = [{"id": str(i), "text": t, "label": lab, "lang": lang} for i, (t, lab, lang) in enumerate(
        [("great film", "positive", "en"), ("awful", "negative", "en"), ("great cast", "positive", "de"),
         ("boring", "negative", "de")])]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "s.yaml"
    task.write_text("# tuneforge eval --endpoint URL --endpoint-model good --task s.yaml\nname: sentiment\n"
                    "data: s.jsonl\nprompt: 'Review: {text}'\nreference: label\nmetrics: [accuracy, macro_f1, ece]\n"
                    "labels: [positive, negative]\nslice_field: lang\n")
    return task


def test_endpoint_label_task_with_base_and_judges(tmp_path, sentiment_task):
    from tuneforge.eval.standalone import EvalOptions, evaluate_command
    from tuneforge.report.eval_report import write_eval_report

    with Stub(_answer) as model_server, Stub(_judge) as judge_server:
        opts = EvalOptions(model=None, task=str(sentiment_task), base="endpoint:bad", endpoint=model_server.url,
                           endpoint_model="good", out=tmp_path / "out", judge_endpoint=judge_server.url,
                           judge_models=["strict", "biased"], judge_mode="pairwise", concurrency=2)
        results = evaluate_command(opts, Console(file=open("/dev/null", "w")), write_report=write_eval_report)
        assert len(judge_server.requests) == 2 + 4 * 2 * 2  # a check per judge, then 4 items, both orders, 2 judges
    tuned, base = results["models"]["tuned"], results["models"]["base"]
    assert tuned["summary"]["accuracy"] == 1.0 and base["summary"]["accuracy"] == 0.5
    assert "ece" not in tuned["summary"] and "calibration unavailable" in results["notes"][0]
    assert tuned["slices"]["de"]["accuracy"] == 1.0 and base["slices"]["de"]["accuracy"] == 0.5
    # base: refs pos,neg,pos,neg; preds all neg -> F1(pos)=0, F1(neg)=2*.5*1/1.5=2/3 -> macro 1/3
    assert base["summary"]["macro_f1"] == pytest.approx(1 / 3)
    comp = results["comparison"]["accuracy"]
    assert comp["delta"] == 0.5 and comp["test"] == "mcnemar_exact" and comp["test_p_value"] == 0.5
    pairwise = results["judge"]["pairwise"]
    # strict judge: items 0, 2 tuned wins in both orders; items 1, 3 ("Negative." vs "negative", neither has
    # 'positive') get "B" in both orders - position bias - so they are inconsistent and count as ties
    assert (pairwise["tuned_wins"], pairwise["base_wins"], pairwise["ties"]) == (2, 0, 2)
    assert pairwise["swap_consistency"] == 0.5
    assert tuned["summary"]["judge_win_rate"] == 0.75
    # accuracy prefers tuned on items 0 and 2; the judge agrees on both
    assert pairwise["agreement_with_metric"] == {"metric": "accuracy", "n": 2, "agreement": 1.0}
    # biased judge (always A) turns every pair into a tie: strict (tuned,tie,tuned,tie) vs (tie x4):
    # po = 2/4, pe = (2*4/16) = .5 -> kappa 0
    assert pairwise["inter_judge_kappa"] == pytest.approx(0.0)
    assert (tmp_path / "out" / "report.html").is_file()


def test_pointwise_judge_scores(tmp_path, sentiment_task):
    from tuneforge.eval.standalone import EvalOptions, evaluate_command

    with Stub(_answer) as model_server, Stub(_judge) as judge_server:
        opts = EvalOptions(model=None, task=str(sentiment_task), endpoint=model_server.url, endpoint_model="good",
                           out=tmp_path / "out", judge_endpoint=judge_server.url, judge_models=["strict"])
        results = evaluate_command(opts, Console(file=open("/dev/null", "w")))
    # answers: positive, Negative., positive, Negative. -> scores 9, 3, 9, 3 -> mean 6 -> 0.6
    assert results["models"]["tuned"]["summary"]["judge_score"] == pytest.approx(0.6)
    agreement = results["judge"]["agreement_with_metric"]["tuned"]
    # score>=6 on items 0, 2 only; accuracy is 1 on all four -> agreement 2/4
    assert agreement["agreement"] == 0.5 and agreement["n"] == 4


def test_harness_missing_message():
    from tuneforge.eval.harness import harness_available, run_harness

    if harness_available():
        pytest.skip("lm_eval is installed here")
    with pytest.raises(TuneforgeError) as info:
        run_harness(["arc_easy"], model_path="x")
    assert "lm-evaluation-harness (module lm_eval) is not installed" in info.value.message
    assert "pip install lm-eval" in info.value.hint
