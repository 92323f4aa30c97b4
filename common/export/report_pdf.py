"""A Markdown report (the subset :func:`common.core.research.build_markdown` writes) as a PDF, with reportlab.

Headings (``#``, ``##``, ``###``), paragraphs, ``-`` and ``1.`` list items and
``**bold**``; everything else is set as plain text. Deterministic: the same
Markdown gives the same bytes (reportlab's invariant mode), so a rewritten
report is byte-identical.
"""

from __future__ import annotations

import io
import re
from xml.sax.saxutils import escape

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_NUMBERED = re.compile(r"^(\d+)\.\s+(.*)$")


def _inline(text: str) -> str:
    return _BOLD.sub(r"<b>\1</b>", escape(text))


def markdown_pdf(markdown: str, *, title: str = "Report") -> bytes:
    from reportlab import rl_config
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    rl_config.invariant = True  # no creation date or random id in the file
    styles = getSampleStyleSheet()
    heading = {1: styles["Title"], 2: styles["Heading2"], 3: styles["Heading3"]}
    body, bullet = styles["BodyText"], styles["BodyText"].clone("bullet", leftIndent=12, bulletIndent=0)
    story: list[object] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            story.append(Paragraph(_inline(" ".join(paragraph)), body))
            paragraph.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        level = len(stripped) - len(stripped.lstrip("#")) if stripped.startswith("#") else 0
        numbered = _NUMBERED.match(stripped)
        if not stripped:
            flush()
        elif 1 <= level <= 3 and stripped[level : level + 1] == " ":
            flush()
            story.append(Paragraph(_inline(stripped[level + 1 :]), heading[level]))
        elif stripped.startswith("- "):
            flush()
            story.append(Paragraph(_inline(stripped[2:]), bullet, bulletText="•"))
        elif numbered:
            flush()
            story.append(Paragraph(_inline(numbered.group(2)), bullet, bulletText=f"{numbered.group(1)}."))
        else:
            paragraph.append(stripped)
    flush()
    story.append(Spacer(1, 4 * mm))
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out, pagesize=A4, title=title, leftMargin=20 * mm, rightMargin=20 * mm, topMargin=20 * mm, bottomMargin=20 * mm
    )
    doc.build(story)
    return out.getvalue()
