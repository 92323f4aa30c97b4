"""A research model for the fake OpenAI-compatible server (tests/fakes/openai_chat.py).

It tells the three calls of a research run apart by their JSON schema: the
plan (``subquestions``), an answer (``citations``) and the report (``title``).
A plan answers the scripted sub-questions; an answer cites the first source it
was shown (by its label) and quotes that source's document and page, so a test
can check the citation against the chunk that was retrieved; the report cites
source 1. Every call is counted, answers per sub-question; ``fail`` names
sub-questions whose answers always fail (HTTP 503, Retry-After: 0), ``before_answer`` runs
before an answer is given (a test's kill switch).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from tests.fakes import vertex
from tests.fakes.openai_chat import ChatRequest, Reply, chat_answer, error

_SUB = re.compile(r"^Sub-question: (.*)$", re.M)
_SOURCE = re.compile(r"^\[(S\d+)\] (.*), page (\d+)(?:-\d+)?:$", re.M)


class ResearchModel:
    def __init__(self, subquestions: Sequence[str], *, fail: Sequence[str] = ()) -> None:
        self.subquestions = list(subquestions)
        self.fail = set(fail)
        self.before_answer: Callable[[str], Reply | None] | None = None
        self._lock = threading.Lock()
        self.plans = 0
        self.reports = 0
        self.answers: Counter[str] = Counter()  # answers given, per sub-question
        self.asked: Counter[str] = Counter()  # answer calls, failed ones included
        self.shown: dict[str, list[tuple[str, str, int]]] = {}  # sub-question -> (label, document, page) shown
        self.report_prompts: list[str] = []

    def __call__(self, req: ChatRequest) -> Reply:
        """The OpenAI-compatible server's responder."""
        return self.respond(req.schema.get("properties", {}), req.user_text)

    def vertex(self, req: vertex.RecordedRequest) -> vertex.Reply:
        """The fake Vertex server's responder (Gemini): the same answers (no ``fail`` or ``before_answer``)."""
        schema = req.generation_config.get("responseJsonSchema") or req.response_schema or {}
        reply = self.respond(schema.get("properties", {}), req.user_text)
        return vertex.answer(json.loads(reply.body)["choices"][0]["message"]["content"])

    def respond(self, props: dict[str, object], prompt: str) -> Reply:
        if "subquestions" in props:
            with self._lock:
                self.plans += 1
            return chat_answer({"subquestions": self.subquestions})
        if "citations" in props:
            return self._answer(prompt)
        if "title" in props:
            with self._lock:
                self.reports += 1
                self.report_prompts.append(prompt)
            return chat_answer({"title": "What the collection says", "summary": "In short: see the findings [1]."})
        return error(400, "fake research model: unknown schema")

    def _answer(self, prompt: str) -> Reply:
        found = _SUB.search(prompt)
        sub = found.group(1).strip() if found else "?"
        sources = [(m.group(1), m.group(2), int(m.group(3))) for m in _SOURCE.finditer(prompt)]
        with self._lock:
            self.asked[sub] += 1
            self.shown[sub] = sources
        if self.before_answer is not None and (reply := self.before_answer(sub)) is not None:
            return reply
        if sub in self.fail:
            return error(503, "the model failed on this one", retry_after="0")  # retried at once
        if not sources:
            text, cited = "The sources do not say.", []
        else:
            label, document, page = sources[0]
            text, cited = f"According to {document} (page {page}), the answer is there [{label}].", [label]
        with self._lock:
            self.answers[sub] += 1
        return chat_answer({"answer": text, "citations": cited})

    def twice(self) -> list[str]:
        with self._lock:
            return sorted(q for q, n in self.answers.items() if n > 1)
