"""The logo auditor: the reference logo is found on the required pages, where it belongs.

Multi-scale template matching (OpenCV's normalised cross-correlation) on the
page rendered in greyscale: a coarse pass at half resolution over every
printed width the rules allow (a geometric ladder of scales), then a fine pass
at full resolution around the best coarse match. The score is the
correlation (0-1); the place is reported as a box in points and as a region
of the page (a 3 x 3 grid: top-left ... bottom-right).

It is the CPU-heavy auditor, so a process-wide semaphore bounds how many
pages are matched at once (``SLUICE_LOGO_CONCURRENCY``) and OpenCV runs one
thread per call: the worker pool already supplies the parallelism.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.audit.document import AuditDocument, render_pages
from common.audit.report import AuditorResult, Box, Finding, Severity
from common.audit.settings import AuditSettings, LogoRules, select_pages
from common.core.errors import PermanentError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import numpy.typing as npt

    Gray = npt.NDArray[np.uint8]

NAME = "logo"
NEEDS_A_LOGO = "needs a reference logo (upload one with the job: --logo)"
DPI = 72.0
_STEP = 1.12  # ratio between two coarse scales
_FINE = (0.95, 0.975, 1.0, 1.025, 1.05)

_slots_lock = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None


def slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore bounding concurrent logo matching (rebuilt if the limit changes)."""
    global _slots
    with _slots_lock:
        if _slots is None or _slots[0] != limit:
            _slots = (limit, threading.BoundedSemaphore(max(1, limit)))
        return _slots[1]


class LogoUnreadable(PermanentError):
    code = "logo_unreadable"
    hint = "Upload the reference logo as a PNG or JPEG image."


@dataclass(frozen=True)
class Match:
    score: float
    box: Box  # points, top-left origin

    def region(self, width: float, height: float) -> str:
        cx = (self.box.x0 + self.box.x1) / 2 / width
        cy = (self.box.y0 + self.box.y1) / 2 / height
        col = "left" if cx < 1 / 3 else ("center" if cx < 2 / 3 else "right")
        row = "top" if cy < 1 / 3 else ("center" if cy < 2 / 3 else "bottom")
        if row == "center":
            return col
        return row if col == "center" else f"{row}-{col}"


def decode_logo(data: bytes) -> Gray:
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if image is None or image.size == 0 or min(image.shape) < 4:
        raise LogoUnreadable("The reference logo is not an image OpenCV can read (or is smaller than 4 px).")
    return np.asarray(image, dtype=np.uint8)


def find(page: Gray, logo: Gray, rules: LogoRules, dpi: float = DPI) -> Match | None:
    """The best match of ``logo`` on ``page`` over the widths the rules allow (None: it cannot fit)."""
    import cv2

    cv2.setNumThreads(1)
    import numpy as np

    coarse = np.asarray(
        cv2.resize(page, (page.shape[1] // 2, page.shape[0] // 2), interpolation=cv2.INTER_AREA), dtype=np.uint8
    )
    widths = _widths(coarse.shape[1], rules)
    best: tuple[float, int, tuple[int, int]] | None = None
    for width in widths:
        hit = _match(coarse, logo, width)
        if hit is not None and (best is None or hit[0] > best[0]):
            best = (hit[0], width, hit[1])
    if best is None:
        return None
    _, width, (x, y) = best
    top: tuple[float, int, tuple[int, int]] | None = None
    for factor in _FINE:
        full = max(4, round(width * 2 * factor))
        full_h = max(4, round(full * logo.shape[0] / logo.shape[1]))
        # Search a window around the coarse hit, a template's size on every side.
        x0, y0 = max(0, 2 * x - full // 2), max(0, 2 * y - full_h // 2)
        x1, y1 = min(page.shape[1], 2 * x + full + full // 2), min(page.shape[0], 2 * y + full_h + full_h // 2)
        hit = _match(page[y0:y1, x0:x1], logo, full)
        if hit is not None and (top is None or hit[0] > top[0]):
            top = (hit[0], full, (x0 + hit[1][0], y0 + hit[1][1]))
    if top is None:
        return None
    score, full, (px, py) = top
    full_h = round(full * logo.shape[0] / logo.shape[1])
    k = 72.0 / dpi
    return Match(score=score, box=Box(x0=px * k, y0=py * k, x1=(px + full) * k, y1=(py + full_h) * k))


def _widths(page_width: int, rules: LogoRules) -> list[int]:
    lo = max(8.0, rules.min_width * page_width)
    hi = max(lo, rules.max_width * page_width)
    steps = int(math.log(hi / lo) / math.log(_STEP)) + 1
    return sorted({round(lo * _STEP**i) for i in range(steps + 1) if lo * _STEP**i <= hi * 1.0001})


def _match(page: Gray, logo: Gray, width: int) -> tuple[float, tuple[int, int]] | None:
    import cv2
    import numpy as np

    height = max(4, round(width * logo.shape[0] / logo.shape[1]))
    if width > page.shape[1] or height > page.shape[0] or width < 4:
        return None
    interpolation = cv2.INTER_AREA if width < logo.shape[1] else cv2.INTER_CUBIC
    template = cv2.resize(logo, (width, height), interpolation=interpolation)
    if float(template.std()) < 1.0:  # a flat template correlates with nothing
        return None
    scores = np.nan_to_num(cv2.matchTemplate(page, template, cv2.TM_CCOEFF_NORMED), nan=0.0, posinf=0.0, neginf=0.0)
    _, best, _, (x, y) = cv2.minMaxLoc(scores)
    return float(min(best, 1.0)), (int(x), int(y))


def audit(
    doc: AuditDocument, data: bytes, logo_bytes: bytes | None, settings: AuditSettings, *, limit: int
) -> AuditorResult:
    if logo_bytes is None:
        return AuditorResult.skipped(NAME, doc.name, NEEDS_A_LOGO)
    rules = settings.logo
    logo = decode_logo(logo_bytes)
    sizes = {p.number: (p.width, p.height) for p in doc.pages}
    numbers = select_pages(rules.pages, len(doc.pages))
    findings: list[Finding] = []
    found_any = False
    for number, image in render_pages(data, numbers, DPI).items():
        with slots(limit):
            match = find(image, logo, rules)
        width, height = sizes[number]
        finding = _verdict(number, match, rules, width, height)
        found_any |= finding.code != "logo_missing"
        if rules.pages != "any" or finding.code != "logo_missing":
            findings.append(finding)
    if rules.pages == "any" and not found_any:
        findings.append(
            Finding(auditor=NAME, code="logo_missing", severity=Severity.ERROR, message="the logo is on no page")
        )
    return AuditorResult.of(NAME, doc.name, findings, pages=len(numbers))


def _verdict(number: int, match: Match | None, rules: LogoRules, width: float, height: float) -> Finding:
    if match is None or match.score < rules.min_score:
        score = None if match is None else round(match.score, 3)
        return Finding(
            auditor=NAME,
            code="logo_missing",
            severity=Severity.ERROR,
            message=f"the logo is not on this page (best score {score}, at least {rules.min_score:g} required)",
            page=number,
            score=score,
        )
    region = match.region(width, height)
    common = {"page": number, "box": match.box.rounded(), "score": round(match.score, 3), "details": {"region": region}}
    if rules.region is not None and region != rules.region:
        return Finding(
            auditor=NAME,
            code="logo_moved",
            severity=Severity.ERROR,
            message=f"the logo is at the {region} of the page, not the {rules.region}",
            **common,
        )
    return Finding(
        auditor=NAME,
        code="logo_found",
        severity=Severity.INFO,
        message=f"the logo is at the {region}",
        **common,
    )
