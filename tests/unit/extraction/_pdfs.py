"""Crafted PDFs for the extraction tests, generated in the test run (no binary fixtures)."""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

# (x, y from the top, text, font size) -- y grows downwards like on paper
Text = tuple[float, float, str, float]


def text_pdf(pages: Sequence[Sequence[Text]], *, font: str = "Helvetica") -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    _w, h = A4
    for page in pages:
        for x, y, text, size in page:
            c.setFont(font, size)
            c.drawString(x, h - y, text)
        c.showPage()
    c.save()
    return buf.getvalue()


def image_only_pdf() -> bytes:
    """A 'scan': one page with a raster image and no text at all."""
    from PIL import Image

    img = Image.new("RGB", (200, 280), "white")
    for x in range(20, 180):
        for y in range(40, 44):
            img.putpixel((x, y), (0, 0, 0))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    from reportlab.lib.utils import ImageReader

    c.drawImage(ImageReader(img), 50, 200, width=400, height=560)
    c.showPage()
    c.save()
    return buf.getvalue()


def raw_pdf(content: bytes, *, filters: str = "/FlateDecode") -> bytes:
    """A minimal one-page PDF whose content stream is ``content`` as given
    (already encoded with ``filters``), with a correct xref table."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length "
        + str(len(content)).encode()
        + b" /Filter "
        + filters.encode()
        + b" >>\nstream\n"
        + content
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def deflate_zeros(n_bytes: int, *, layers: int = 1) -> bytes:
    """``n_bytes`` of spaces deflated ``layers`` times, without holding them in memory."""
    comp = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    parts = []
    left = n_bytes
    while left > 0:
        parts.append(comp.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(comp.flush())
    data = b"".join(parts)
    for _ in range(layers - 1):
        data = zlib.compress(data, 9)
    return data


def scanned(pdf: bytes, *, angle: float = 2.0, dpi: int = 150, noise: int = 12, fmt: str = "PDF") -> bytes:
    """``pdf``'s pages as a scan: rendered at ``dpi``, rotated by ``angle``
    degrees, with light noise, written as an image-only PDF (or one PNG/TIFF)."""
    import random

    import pypdfium2
    from PIL import Image

    rnd = random.Random(7)
    doc = pypdfium2.PdfDocument(pdf)
    images = []
    for page in doc:
        img = page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
        img = img.rotate(angle, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
        px = img.load()
        assert px is not None
        for _ in range(img.width * img.height // 40):
            x, y = rnd.randrange(img.width), rnd.randrange(img.height)
            v = px[x, y]
            assert isinstance(v, int)
            px[x, y] = max(0, min(255, v + rnd.randint(-noise * 4, noise * 4)))
        images.append(img)
    doc.close()
    buf = io.BytesIO()
    if fmt == "PDF":
        images[0].save(buf, format="PDF", resolution=dpi, save_all=True, append_images=images[1:])
    else:
        images[0].save(buf, format=fmt, dpi=(dpi, dpi))
    return buf.getvalue()
