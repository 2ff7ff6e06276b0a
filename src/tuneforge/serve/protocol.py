"""OpenAI request bodies and error responses: what the routes accept and how they say no.

Unknown request fields are ignored (OpenAI clients send optional fields this server does not use); fields it does
use are validated and a wrong one is a 422 naming the field. Every error has OpenAI's shape
{"error": {"message", "type", "param", "code"}}.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "service_unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def response(self, request_id: str | None = None) -> JSONResponse:
        body = {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}
        headers = dict(self.headers)
        if request_id:
            headers["x-request-id"] = request_id
        return JSONResponse(body, status_code=self.status, headers=headers)


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(Lenient):
    type: Literal["text"]
    text: str


class Message(Lenient):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[ContentPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class Sampling(Lenient):
    model: str = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    user: str | None = None
    stream_options: dict | None = None

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)


class ChatRequest(Sampling):
    messages: list[Message] = Field(..., min_length=1)
    response_format: dict | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: bool = False


class FeedbackRequest(Lenient):
    response_id: str = Field(..., min_length=1)
    rating: int | None = Field(None, ge=-1, le=5)
    correction: str | None = None
    preferred: str | None = None
    comment: str | None = None


class AdapterLoad(Lenient):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    path: str


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        if first["type"] == "missing":
            message = f"{param}: required field is missing"
        raise ApiError(422, message, code="invalid_value", param=param) from None
