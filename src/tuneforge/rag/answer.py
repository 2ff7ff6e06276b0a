"""Answer a question from retrieved passages with the one inference engine, citing them as [1], [2], ..."""
from __future__ import annotations

from dataclasses import dataclass

from tuneforge.rag.metrics import _CITE
from tuneforge.rag.retrieve import Passage

SYSTEM = ("Answer the question using only the numbered passages. After each sentence, cite the passages that "
          "support it as [1], [2]. If the passages do not contain the answer, say so.")


@dataclass
class RagAnswer:
    text: str
    passages: list[Passage]
    cited: list[int]  # passage numbers (from 1) the answer cites, in first-cited order

    def sources(self) -> list[tuple[int, Passage]]:
        return [(n, self.passages[n - 1]) for n in self.cited if 1 <= n <= len(self.passages)]


def rag_messages(question: str, passages: list[Passage]) -> list[dict]:
    context = "\n\n".join(f"[{n}] ({p.key}{': ' + p.heading if p.heading else ''})\n{p.text}"
                          for n, p in enumerate(passages, 1))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Passages:\n{context}\n\nQuestion: {question}"}]


def cited_numbers(text: str) -> list[int]:
    return list(dict.fromkeys(int(n) for n in _CITE.findall(text)))


def answer_questions(engine, questions: list[str], passages: list[list[Passage]], *, max_new_tokens: int = 160,
                     adapter: str | None = None) -> list[RagAnswer]:
    prompts = [rag_messages(q, ps) for q, ps in zip(questions, passages)]
    completions = engine.generate(prompts, max_new_tokens=max_new_tokens, batch_size=4,
                                  adapters=[adapter] * len(prompts) if adapter else None,
                                  description="answering with retrieved passages")
    return [RagAnswer(c.text.strip(), ps, cited_numbers(c.text)) for c, ps in zip(completions, passages)]
