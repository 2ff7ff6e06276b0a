"""Retrieval-augmented chat on the OpenAI route: the model name `rag/INDEX/MODEL` answers from an index.

    # serve.yaml
    rag:
      indexes: {pydoc: ./pydoc-index}   # names clients use -> index folders (tuneforge rag index)
      k: 5
      reranker: ./my-cross-encoder      # optional: rerank the top rerank_candidates (20) by a cross-encoder

    client.chat.completions.create(model="rag/pydoc/my-adapter", messages=[{"role": "user", "content": "..."}])

MODEL is any model the server serves (the base name or an adapter). The last user message is the query; the k
retrieved passages are put into the prompt exactly as `tuneforge rag query` and RAFT training rows put them
(rag.answer.rag_messages), so a RAFT-tuned adapter sees its training format. The request then runs through the
ordinary chat route: the key must be allowed MODEL, limits and the request log apply, and the retrieved passages
pass the same input guardrails as the question (an injection hidden in a document is caught like a typed one).

The response is an ordinary chat completion plus two fields: `sources`, one entry per passage in the prompt
(number, chunk id, path, heading, character span, retrieval score, `rerank_score` when a reranker is configured,
whether the answer cites it) and `citations`, the passage numbers the answer cites in first-cited order. Streaming
sends `sources` on the first chunk and `citations` on the chunk that carries the finish reason. Clients index
folders by configured name only: a request can never make the server open a path.
"""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from fastapi.responses import JSONResponse, StreamingResponse

from tuneforge.serve.config import RagSettings
from tuneforge.serve.protocol import ApiError, Message

PREFIX = "rag/"


class RagRoutes:
    def __init__(self, settings: RagSettings | None):
        self.settings = settings
        self._retrievers: dict[str, object] = {}
        self._embedders: dict[str, object] = {}
        self._reranker = None  # one cross-encoder shared by every index, loaded with the first retriever
        self._lock = threading.Lock()

    def model_names(self, models: list[str]) -> list[str]:
        """rag/INDEX/MODEL for every configured index and every given (listed, allowed) model, for /v1/models."""
        indexes = sorted(self.settings.indexes) if self.settings else []
        return [f"{PREFIX}{index}/{model}" for index in indexes for model in models]

    def handles(self, model: str) -> bool:
        return model.startswith(PREFIX)

    def split(self, name: str) -> tuple[str, str]:
        """rag/INDEX/MODEL -> (INDEX, MODEL); MODEL may itself contain slashes (hub-style base names)."""
        parts = name.split("/", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ApiError(404, f"the model {name!r} does not exist: retrieval-augmented models are named "
                           "rag/INDEX/MODEL", code="model_not_found", param="model")
        if self.settings is None:
            raise ApiError(404, f"the model {name!r} does not exist: this server has no `rag:` section",
                           code="model_not_found", param="model")
        if parts[1] not in self.settings.indexes:
            known = ", ".join(sorted(self.settings.indexes))
            raise ApiError(404, f"the model {name!r} does not exist: no index named {parts[1]!r} (served: {known})",
                           code="model_not_found", param="model")
        return parts[1], parts[2]

    def retriever(self, index: str):
        """One Retriever per index, loaded on first use; indexes built with the same model share its embedder."""
        with self._lock:
            if index not in self._retrievers:
                from tuneforge.rag.embed import Embedder
                from tuneforge.rag.index import DB_NAME, connect, read_meta
                from tuneforge.rag.retrieve import Retriever

                folder = Path(self.settings.indexes[index])
                if not (folder / DB_NAME).is_file():
                    raise ApiError(503, f"the index {index!r} is not available on this server", code="index_missing")
                db = connect(folder)
                try:
                    model = read_meta(db).get("model")
                finally:
                    db.close()
                if model not in self._embedders:
                    self._embedders[model] = Embedder(model)
                retriever = Retriever(folder, self._embedders[model])
                if self.settings.reranker:
                    retriever.set_reranker(self._load_reranker(), self.settings.rerank_candidates)
                self._retrievers[index] = retriever
            return self._retrievers[index]

    def _load_reranker(self):
        if self._reranker is None:
            from tuneforge.errors import TuneforgeError
            from tuneforge.rag.rerank import Reranker

            try:
                self._reranker = Reranker(self.settings.reranker)
            except TuneforgeError as error:
                raise ApiError(503, f"the reranker of this server is not available: {error.message}",
                               code="reranker_missing") from None
        return self._reranker

    async def chat(self, request, key, req, generate):
        """Retrieve, rewrite the request for MODEL, run the ordinary chat route, add the sources to its answer."""
        from tuneforge.rag.answer import SYSTEM, cited_numbers, rag_messages

        name = req.model
        index, model = self.split(name)
        users = [i for i, m in enumerate(req.messages) if m.role == "user"]
        if not users:
            raise ApiError(400, "a retrieval-augmented request needs a user message (the query)", code="no_query",
                           param="messages")
        question = req.messages[users[-1]].text()

        def search():
            retriever = self.retriever(index)
            return retriever.search(question, self.settings.k, self.settings.mode)

        passages = await asyncio.to_thread(search)
        context = rag_messages(question, passages)
        client_system = "\n\n".join(m.text() for m in req.messages if m.role in ("system", "developer"))
        system = SYSTEM + ("\n\n" + client_system if client_system else "")
        history = [m for i, m in enumerate(req.messages[:users[-1]]) if m.role not in ("system", "developer")]
        messages = [Message(role="system", content=system), *history,
                    Message(role="user", content=context[-1]["content"])]
        inner = req.model_copy(update={"model": model, "messages": messages})
        response = await generate(request, key, inner, chat=True)
        sources = [{"number": n, "chunk_id": p.id, "path": p.source, "heading": p.heading, "start_char": p.start_char,
                    "end_char": p.end_char, "score": p.score,
                    **({"rerank_score": p.rerank_score} if p.rerank_score is not None else {})}
                   for n, p in enumerate(passages, 1)]

        def finish(payload: dict, text: str | None) -> dict:
            payload["model"] = name
            if text is not None:
                cited = cited_numbers(text)
                payload["citations"] = cited
                payload["sources"] = [{**s, "cited": s["number"] in cited} for s in sources]
            return payload

        if isinstance(response, StreamingResponse):
            return StreamingResponse(self._stream(response.body_iterator, name, sources, cited_numbers),
                                     media_type="text/event-stream", headers=_headers(response))
        payload = json.loads(response.body)
        if response.status_code == 200:
            payload = finish(payload, payload["choices"][0]["message"]["content"] or "")
        return JSONResponse(payload, status_code=response.status_code, headers=_headers(response))

    @staticmethod
    async def _stream(events, name: str, sources: list[dict], cited_numbers):
        text, first = "", True
        async for event in events:
            event = event.decode() if isinstance(event, bytes) else event
            if not event.startswith("data: {"):
                yield event
                continue
            payload = json.loads(event[len("data: "):])
            if "choices" not in payload:  # an in-band error
                yield event
                continue
            payload["model"] = name
            for choice in payload["choices"]:
                text += choice.get("delta", {}).get("content") or ""
                if choice.get("finish_reason"):
                    cited = cited_numbers(text)
                    payload["citations"] = cited
                    payload["sources"] = [{**s, "cited": s["number"] in cited} for s in sources]
            if first:
                payload.setdefault("sources", [{**s, "cited": None} for s in sources])
                first = False
            yield f"data: {json.dumps(payload)}\n\n"


def _headers(response) -> dict[str, str]:
    # The body is re-encoded, so its length and type headers are the new response's to set.
    return {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
