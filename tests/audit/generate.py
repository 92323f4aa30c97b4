"""Documents the audit tests generate with reportlab, with exactly the properties each test asserts."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw
from reportlab.lib.pagesizes import A4, A5, landscape
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

DISCLAIMER = (
    "This document is confidential and intended solely for the addressee. "
    "Any unauthorised use or disclosure is prohibited."
)
BODY = [
    "The quarterly report summarises revenue, costs and the outlook for the next period.",
    "Revenue grew in every region, led by the northern branch and the new online shop.",
    "Costs rose less than planned because two projects were moved into the next year.",
    "The board recommends keeping the dividend unchanged and investing in training.",
]


def logo_png(width: int = 360, height: int = 180, seed: int = 0) -> bytes:
    """A distinctive logo: a ring, a triangle and bars (``seed`` shifts the shapes: another logo)."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    k, s = width / 240, seed * 17

    def sc(*xy: float) -> list[float]:
        return [v * k for v in xy]

    draw.ellipse(sc(10 + s, 10, 100 + s, 110), outline=(200, 30, 30), width=round(12 * k))
    draw.polygon([(120 * k, 105 * k), ((165 - s) * k, 15 * k), (210 * k, 105 * k)], fill=(20, 60, 180))
    for i in range(4):
        draw.rectangle(sc(215 - s, 20 + i * 24, 232, 30 + i * 24), fill=(30, 140, 60))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def chart_png() -> bytes:
    """An image that is not the logo (a bar chart): a distractor for the logo auditor."""
    image = Image.new("RGB", (300, 200), "white")
    draw = ImageDraw.Draw(image)
    for i, h in enumerate((60, 120, 90, 160, 40)):
        draw.rectangle([20 + i * 55, 190 - h, 60 + i * 55, 190], fill=(90, 90, 90))
    draw.line([10, 190, 290, 190], fill="black", width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass
class Spec:
    pages: int = 2
    pagesize: tuple[float, float] = A4
    disclaimer: str | None = DISCLAIMER
    disclaimer_pages: list[int] | None = None  # None: every page (as a footer)
    logo: bytes | None = None
    logo_at: str = "top-left"  # top-left | bottom-right
    logo_width: float = 120.0  # points
    logo_pages: list[int] = field(default_factory=lambda: [1])
    embed_fonts: bool = True
    margin: float = 20 * mm  # left/top margin of the text
    image_dpi: float | None = None  # a photo printed at this resolution on page 1
    distractor: bool = False


def _font(embed: bool) -> str:
    if not embed:
        return "Helvetica"  # one of the 14 standard fonts: never embedded
    import reportlab

    pdfmetrics.registerFont(TTFont("Vera", str(Path(reportlab.__file__).parent / "fonts" / "Vera.ttf")))
    return "Vera"


def build(spec: Spec) -> bytes:
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=spec.pagesize)
    width, height = spec.pagesize
    font = _font(spec.embed_fonts)
    for number in range(1, spec.pages + 1):
        c.setFont(font, 11)
        y = height - spec.margin - 60
        for line in BODY:
            c.drawString(spec.margin, y, line[: int((width - 2 * spec.margin) / 6.5)])
            y -= 16
        if spec.logo is not None and number in spec.logo_pages:
            ratio = 0.5  # the generated logos are 2:1
            w, h = spec.logo_width, spec.logo_width * ratio
            if spec.logo_at == "top-left":
                x, top = spec.margin, height - 15 * mm
            else:
                x, top = width - 25 * mm - w, 25 * mm + h
            c.drawImage(ImageReader(io.BytesIO(spec.logo)), x, top - h, width=w, height=h)
        if spec.distractor and number == 1:
            c.drawImage(ImageReader(io.BytesIO(chart_png())), width / 2, height / 2 - 150, width=150, height=100)
        if spec.image_dpi is not None and number == 1:
            # chart_png is 300 x 200 pixels: printed this size, it has exactly image_dpi.
            w, h = 300 * 72 / spec.image_dpi, 200 * 72 / spec.image_dpi
            c.drawImage(ImageReader(io.BytesIO(chart_png())), spec.margin, 300, width=w, height=h)
        if spec.disclaimer and (spec.disclaimer_pages is None or number in spec.disclaimer_pages):
            c.setFont(font, 7)
            # Two lines, broken between words as a typesetter would.
            cut = spec.disclaimer.rfind(" ", 0, 75) if len(spec.disclaimer) > 75 else len(spec.disclaimer)
            c.drawString(spec.margin, 18 * mm, spec.disclaimer[:cut])
            c.drawString(spec.margin, 18 * mm - 9, spec.disclaimer[cut:].strip())
        c.showPage()
    c.save()
    return out.getvalue()


__all__ = ["A4", "A5", "BODY", "DISCLAIMER", "Spec", "build", "chart_png", "landscape", "logo_png"]
