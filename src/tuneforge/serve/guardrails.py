"""Input and output guardrails of the server: PII (tuneforge.data.pii), blocklist, prompt injection, JSON answers.

Each check returns what it changed or why it refuses; the app counts every hit in /metrics and logs it with the
request id. Prompt-injection detection is a set of patterns (no model): its precision/recall on the shipped safety
probes is measured in tests/unit/test_serve_guardrails.py.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from tuneforge.data.pii import find_pii, redact

# Phrasings that try to replace the operator's instructions. Each alternative needs an instruction-like object
# ("ignore ... instructions/task/rules", "system override", "developer mode") so that ordinary uses of "ignore"
# or "pretend" do not fire.
_INJECTION = [
    (r"\b(ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|the|"
    r"safety|system)\b[^.\n]{0,30}\b(instructions?|prompts?|rules|guidelines|task|directions|policy|policies|"
    r"classification|context)\b"),
    r"\b(system|admin|developer|operator)\s+(override|mode)\b",
    r"\bnew instructions?\b",
    r"\b(you are|act as|you're) now\b",
    r"\b(no|without) (content )?(policy|policies|rules|restrictions|filters?)\b",
    (r"\b(repeat|print|reveal|show|output|translate|leak)\b[^.\n]{0,40}\b(system prompt|hidden instructions?|"
    r"instructions above|everything above|your (instructions|prompt))\b"),
    (r"\b(reveal|output|print|give me|tell me)\b[^.\n]{0,30}\b(secret|password|admin password|api key|"
    r"discount code|secret code)\b"),
    r"\bpretend (you are|to be)\b",
    r"\bjailbreak\b|\bDAN\b",
]
INJECTION_PATTERNS = [re.compile(p, re.IGNORECASE) for p in _INJECTION]
INJECTION_PATTERNS[-1] = re.compile(_INJECTION[-1])  # "DAN" only in capitals; "dan" is a name


def detect_injection(text: str) -> str | None:
    """The matched phrase when `text` looks like a prompt injection, else None."""
    for pattern in INJECTION_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(0)
    return None


@dataclass
class GuardResult:
    text: str
    hits: list[str] = field(default_factory=list)   # guardrail names triggered (counted + logged)
    refusal: str | None = None                      # set: refuse the request with this message
    code: str | None = None


def check_input(text: str, guard) -> GuardResult:
    """Run the input guardrails on one prompt text (a message's content or a raw prompt)."""
    result = GuardResult(text)
    if guard.blocklist:
        lowered = text.lower()
        found = [w for w in guard.blocklist if w.lower() in lowered]
        if found:
            result.hits.append("blocklist")
            result.refusal, result.code = f"the prompt contains a blocked term ({found[0]!r})", "guardrail_blocklist"
            return result
    if guard.pii != "off":
        matches = find_pii(text)
        if matches:
            result.hits.append("pii")
            if guard.pii == "block":
                kinds = ", ".join(sorted({m.type for m in matches}))
                result.refusal, result.code = f"the prompt contains personal data ({kinds})", "guardrail_pii"
                return result
            result.text = redact(text)[0]
    if guard.prompt_injection != "off":
        phrase = detect_injection(text)
        if phrase:
            result.hits.append("prompt_injection")
            if guard.prompt_injection == "block":
                result.refusal = f"the prompt looks like a prompt injection ({phrase!r})"
                result.code = "guardrail_prompt_injection"
    return result


def check_output(text: str, guard) -> GuardResult:
    result = GuardResult(text)
    if guard.output_pii == "redact":
        redacted, matches = redact(text)
        if matches:
            result.text = redacted
            result.hits.append("output_pii")
    for word in guard.blocklist:
        pattern = re.compile(re.escape(word), re.IGNORECASE)
        if pattern.search(result.text):
            result.text = pattern.sub("[BLOCKED]", result.text)
            if "output_blocklist" not in result.hits:
                result.hits.append("output_blocklist")
    if guard.output_regex and not re.search(guard.output_regex, result.text):
        result.hits.append("output_regex")
        result.refusal, result.code = "the answer does not match the configured output pattern", \
            "guardrail_output_regex"
    return result


def json_problem(text: str, response_format: dict | None) -> str | None:
    """Why `text` does not satisfy `response_format` (json_object / json_schema), or None when it does."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    try:
        value = json.loads(_strip_fence(text))
    except ValueError as exc:
        return f"the answer is not valid JSON ({exc})"
    if response_format["type"] == "json_object":
        return None if isinstance(value, dict) else "the answer is JSON but not an object"
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return f"the answer does not match the JSON schema: {exc.message}"
    return None


def _strip_fence(text: str) -> str:
    text = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.DOTALL)
    return fenced.group(1) if fenced else text


def json_instruction(response_format: dict) -> str:
    """The system message of the one constrained retry after an answer failed JSON validation."""
    if response_format.get("type") == "json_schema":
        schema = json.dumps((response_format.get("json_schema") or {}).get("schema") or {})
        return f"Answer with only one JSON value matching this JSON schema, no other text: {schema}"
    return "Answer with only one JSON object, no other text."


def validate_response_format(response_format) -> str | None:
    """A client mistake in `response_format` (returned as a message for a 400), else None."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict) or response_format.get("type") not in ("text", "json_object",
                                                                                     "json_schema"):
        return "response_format.type must be one of text, json_object, json_schema"
    if response_format["type"] == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            return "response_format.json_schema must be an object with a `schema` object"
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(spec.get("schema", {}))
        except jsonschema.SchemaError as exc:
            return f"response_format.json_schema.schema is not a valid JSON schema: {exc.message}"
    return None
