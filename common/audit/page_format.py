"""The format auditor: page size and orientation, margins, embedded fonts and image resolution.

Margins are measured from the union of the text and image boxes (vector
drawings are not counted: a full-page background rectangle would otherwise
leave no margin at all). Fonts are those text objects actually use, so a font
listed in a page's resources but never drawn with is not reported.
"""

from __future__ import annotations

from common.audit.document import MM_PER_PT, AuditDocument, Page
from common.audit.report import AuditorResult, Finding, Severity
from common.audit.settings import PAPER_MM, AuditSettings, FormatRules

NAME = "format"


def audit(doc: AuditDocument, settings: AuditSettings) -> AuditorResult:
    rules = settings.format
    findings: list[Finding] = []
    for page in doc.pages:
        findings += _size(page, rules) + _margins(page, rules) + _images(page, rules)
    if rules.embedded_fonts:
        findings += _fonts(doc)
    return AuditorResult.of(NAME, doc.name, findings, pages=len(doc.pages))


def _size(page: Page, rules: FormatRules) -> list[Finding]:
    w, h = page.width_mm, page.height_mm
    shown = f"{w:.1f} x {h:.1f} mm"
    out: list[Finding] = []
    if rules.page_size is not None:
        pw, ph = PAPER_MM[rules.page_size]
        tol = rules.size_tolerance_mm
        fits = any(abs(w - a) <= tol and abs(h - b) <= tol for a, b in ((pw, ph), (ph, pw)))
        if not fits:
            out.append(
                Finding(
                    auditor=NAME,
                    code="page_size",
                    severity=Severity.ERROR,
                    message=f"page is {shown} ({_paper_name(w, h, tol)}), not {rules.page_size} ({pw:g} x {ph:g} mm)",
                    page=page.number,
                    details={"width_mm": round(w, 1), "height_mm": round(h, 1), "expected": rules.page_size},
                )
            )
    if rules.orientation is not None:
        actual = "landscape" if w > h else "portrait"
        if actual != rules.orientation and abs(w - h) > rules.size_tolerance_mm:
            out.append(
                Finding(
                    auditor=NAME,
                    code="orientation",
                    severity=Severity.ERROR,
                    message=f"page is {actual} ({shown}), not {rules.orientation}",
                    page=page.number,
                )
            )
    return out


def _paper_name(w: float, h: float, tol: float) -> str:
    for name, (a, b) in PAPER_MM.items():
        if abs(w - a) <= tol and abs(h - b) <= tol:
            return name
        if abs(w - b) <= tol and abs(h - a) <= tol:
            return f"{name} landscape"
    return "no standard size"


def _margins(page: Page, rules: FormatRules) -> list[Finding]:
    content = page.content_box()
    if content is None:
        return []
    measured = {
        "top": content.y0 * MM_PER_PT,
        "right": (page.width - content.x1) * MM_PER_PT,
        "bottom": (page.height - content.y1) * MM_PER_PT,
        "left": content.x0 * MM_PER_PT,
    }
    out: list[Finding] = []
    for side, value in measured.items():
        minimum = getattr(rules.margins_mm, side)
        if minimum is not None and value + 0.05 < minimum:
            out.append(
                Finding(
                    auditor=NAME,
                    code="margin",
                    severity=Severity.ERROR,
                    message=f"{side} margin is {value:.1f} mm, at least {minimum:g} mm required",
                    page=page.number,
                    box=content.rounded(),
                    details={"side": side, "margin_mm": round(value, 1), "min_mm": minimum},
                )
            )
    return out


def _images(page: Page, rules: FormatRules) -> list[Finding]:
    if rules.min_image_dpi is None:
        return []
    return [
        Finding(
            auditor=NAME,
            code="image_resolution",
            severity=Severity.ERROR,
            message=f"image printed at {image.dpi:.0f} dpi, at least {rules.min_image_dpi:g} dpi required",
            page=page.number,
            box=image.box.rounded(),
            details={"dpi": round(image.dpi, 1), "pixels": [image.px_width, image.px_height]},
        )
        for image in page.images
        if image.dpi + 0.5 < rules.min_image_dpi
    ]


def _fonts(doc: AuditDocument) -> list[Finding]:
    pages: dict[str, list[int]] = {}
    for page in doc.pages:
        for font in page.fonts:
            if not font.embedded:
                pages.setdefault(font.name, []).append(page.number)
    return [
        Finding(
            auditor=NAME,
            code="font_not_embedded",
            severity=Severity.ERROR,
            message=f"font {name} is not embedded (pages {_ranges(numbers)})",
            page=numbers[0] if len(numbers) == 1 else None,
            details={"font": name, "pages": numbers},
        )
        for name, numbers in sorted(pages.items())
    ]


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
