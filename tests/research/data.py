"""A small collection to research: a three-page PDF handbook and a Markdown note, with facts on known pages."""

from __future__ import annotations

import io
from typing import Any

from common.core.chunking import ChunkSettings
from common.service import collections as cols
from common.service.context import Deps, Sender

PAGES = [
    [
        "Employee handbook. Welcome to Acme. This handbook describes the company",
        "and its history since 1999, its offices in Lyon and Porto, and its values.",
    ],
    [
        "Vacation policy. Every employee receives 27 vacation days per year.",
        "Unused vacation days expire at the end of March of the following year.",
    ],
    [
        "Expense policy. Expense reports are due within 30 days of the expense.",
        "Receipts are required for every expense over 25 euros, scanned or on paper.",
    ],
]
TRAVEL = "# Travel\n\nTrain travel is preferred over flights for short trips under 500 km.\n"

VACATION = "How many vacation days do employees get?"
EXPENSES = "When are expense reports due?"
TRAVEL_Q = "Which travel mode is preferred for short trips?"
SUBQUESTIONS = [VACATION, EXPENSES, TRAVEL_Q]
# Where each sub-question's answer is (document, page).
WHERE = {VACATION: ("handbook.pdf", 2), EXPENSES: ("handbook.pdf", 3), TRAVEL_Q: ("travel.md", 1)}


def handbook_pdf() -> bytes:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4, invariant=True)
    for lines in PAGES:
        c.setFont("Helvetica", 11)
        for i, line in enumerate(lines):
            c.drawString(60, 760 - 16 * i, line)
        c.showPage()
    c.save()
    return out.getvalue()


def documents() -> list[cols.NewDocument]:
    return [
        cols.NewDocument(name="handbook.pdf", data=handbook_pdf(), mime="application/pdf"),
        cols.NewDocument(name="travel.md", data=TRAVEL.encode(), mime=None),
    ]


def ingest(deps: Deps, sender: Sender, owner: str, name: str = "handbook") -> Any:
    """A collection of the owner's with both documents stored (its ingest run is still to be drained)."""
    coll = cols.create_collection(deps, owner, name, chunking=ChunkSettings(max_tokens=32, overlap_tokens=0))
    cols.add_documents(deps, sender, owner, coll.id, documents())
    return coll
