"""Derive the bundled preference / KTO / raw-text / city-task samples from the quickstart contact-extraction task.

    python scripts/make_objective_samples.py     (writes src/tuneforge/assets/samples/*.jsonl; deterministic)

chosen / desirable = the correct JSON answer; rejected / undesirable = a corrupted one, cycling through four
defects (a wrong field value, a missing key, prose around the JSON, invalid JSON), so a preference learner has
to learn the task's format and content, not one surface cue.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src/tuneforge/assets/quickstart"
OUT = ROOT / "src/tuneforge/assets/samples"
SIZES = {"train": 64, "validation": 16, "test": 20}


def corrupt(answer: str, index: int) -> str:
    obj = json.loads(answer)
    kind = index % 4
    if kind == 0:
        wrong = dict(obj)
        wrong["city"] = "Springfield" if obj.get("city") != "Springfield" else "Shelbyville"
        return json.dumps(wrong)
    if kind == 1:
        return json.dumps({k: v for k, v in obj.items() if k != "company"})
    if kind == 2:
        return f"Sure! Here is the contact: {answer}"
    return answer.rstrip("}")  # truncated: not valid JSON


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for split, size in SIZES.items():
        rows = [json.loads(line) for line in (SRC / f"{split}.jsonl").read_text().splitlines() if line.strip()]
        rows = rows[:size]
        pref, kto, text, city = [], [], [], []
        for i, row in enumerate(rows):
            prompt = [m for m in row["messages"] if m["role"] != "assistant"]
            answer = [m for m in row["messages"] if m["role"] == "assistant"][-1]["content"]
            bad = corrupt(answer, i)
            pref.append({"id": row["id"], "prompt": prompt, "chosen": [{"role": "assistant", "content": answer}],
                         "rejected": [{"role": "assistant", "content": bad}]})
            good = i % 2 == 0
            kto.append({"id": row["id"], "prompt": prompt,
                        "completion": [{"role": "assistant", "content": answer if good else bad}], "label": good})
            sentence = prompt[-1]["content"].split("\n\n", 1)[-1]
            text.append({"id": row["id"], "text": f"{sentence}\nContact record: {answer}"})
            # A second, prompt/completion task for multi-task mixtures: the city alone.
            city.append({"id": row["id"], "prompt": f"{sentence}\nCity:",
                         "completion": " " + json.loads(answer)["city"]})
        for name, data in (("preference", pref), ("kto", kto), ("text", text), ("city", city)):
            if name == "text" and split == "test":
                continue
            path = OUT / f"{name}-{split}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
            print(f"{path.relative_to(ROOT)}: {len(data)} rows")


if __name__ == "__main__":
    main()
