"""The real bundled SmolLM2-135M behind `tuneforge serve RUN` (the CLI, in a subprocess): base and adapter side by
side, the README's curl and `openai` examples run as printed (only the port differs), and a SIGKILLed server
leaves every logged row in an intact database."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tuneforge.serve.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def readme_serving_examples() -> tuple[str, str]:
    section = (ROOT / "README.md").read_text().split("## Serving", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    return bash, python


@pytest.mark.slow
def test_serve_a_run_and_the_readme_examples_work(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.loading import load_model
    from tuneforge.models.sources import resolve_model

    run = tmp_path / "runs" / "quickstart"
    torch.manual_seed(0)
    resolved = resolve_model("smollm2-135m-instruct")
    peft_model = get_peft_model(load_model(resolved, "float32"),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(run / "adapter")
    (run / "manifest.json").write_text(json.dumps({"base_model": {"source": "smollm2-135m-instruct",
                                                                  "weights_sha256": resolved.weights_sha256}}))
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = subprocess.Popen([sys.executable, "-m", "tuneforge.cli.main", "serve", "runs/quickstart", "--port",
                               str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.5)
        bash, python = readme_serving_examples()
        bash = bash.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        python = python.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        curl = subprocess.run(["bash", "-c", bash], check=False, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        reply = json.loads(curl.stdout)
        assert reply["model"] == "quickstart" and reply["choices"][0]["message"]["content"], curl.stdout
        script = subprocess.run([sys.executable, "-c", python], check=False, cwd=tmp_path, capture_output=True,
                                text=True,
                                timeout=300, env=env)
        assert script.returncode == 0, script.stderr
        assert script.stdout.startswith("smollm2-135m-instruct ") and "\nquickstart " in script.stdout
        base_answer, tuned_answer = script.stdout.removeprefix("smollm2-135m-instruct ").split("\nquickstart ", 1)
        assert base_answer != tuned_answer, "the adapter should change the answer"
    finally:
        server.kill()  # SIGKILL: the request log must still hold every committed row, uncorrupted
        output = server.communicate(timeout=60)[0]
    import sqlite3

    db = sqlite3.connect(run / "serve" / "serve.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = db.execute("SELECT model, status FROM requests ORDER BY created").fetchall()
    assert rows == [("quickstart", 200), ("smollm2-135m-instruct", 200), ("quickstart", 200)]
    assert f"listening on http://127.0.0.1:{port}/v1" in output
    assert "serving: smollm2-135m-instruct, quickstart (adapter" in output
    assert "admin key created on first start: runs/quickstart/serve/admin.key" in output or \
        f"admin key created on first start: {run / 'serve' / 'admin.key'}" in output
