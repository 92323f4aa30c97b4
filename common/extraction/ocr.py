"""OCR for scanned PDFs and images (PNG, JPEG, TIFF) with Tesseract.

The engine was chosen by measurement (see docs/ARCHITECTURE.md, "Offline
extraction"): on corpus pages rendered at 150 dpi with noise and a 1-3 degree
rotation, Tesseract 5 (Debian ``tesseract-ocr``) read 86 % of the text layer's
words against 65 % for RapidOCR/ONNX Runtime, installs in about 25 MB instead of
about 250 MB, and took about twice as long per page. Tesseract runs as a
subprocess (one per page, ``OMP_THREAD_LIMIT=1`` so parallel workers do not
oversubscribe the CPU); its word boxes become :class:`~common.extraction.layout.Word`
objects, so the same layout and field code reads them.

Pages are put upright in two steps: Tesseract's orientation detection (``--psm
0``) when a first reading is poor (a page scanned upside down or sideways),
and a deskew of the word boxes by the median slope of Tesseract's text lines
(a page scanned a few degrees askew), so that words on one printed line share
a baseline for the layout code.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from common.core.errors import UnreadableDocument
from common.extraction.layout import Document, Word, build_document

__all__ = ["ENGINE", "available", "ocr_image", "ocr_pdf"]

ENGINE = "tesseract"
# Scans are rendered at this resolution for recognition (Tesseract is most
# accurate around 300 dpi; 200 halves the time for a point or two of accuracy).
RENDER_DPI = 200
_TIMEOUT_S = 120
_MIN_CONF = 70.0  # below this mean word confidence, check the page's orientation (upright scans: 80-95)
_LANGS_WANTED = ("eng", "deu", "fra", "nld", "ita", "spa")


def _binary() -> str | None:
    """``SLUICE_TESSERACT`` (a path or a name on PATH) or ``tesseract``, if executable."""
    return shutil.which(os.environ.get("SLUICE_TESSERACT") or "tesseract")


def available() -> bool:
    """Whether OCR can run here (the ``tesseract`` binary is installed)."""
    return _binary() is not None


@lru_cache(maxsize=1)
def _languages() -> str:
    """The installed languages among those Sluice reads, joined for ``-l``."""
    wanted = os.environ.get("SLUICE_OCR_LANGS")
    if wanted:
        return wanted
    exe = _binary()
    if exe is None:
        return "eng"
    out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30, check=False).stdout
    have = {ln.strip() for ln in out.splitlines()[1:]}
    langs = [lang for lang in _LANGS_WANTED if lang in have]
    return "+".join(langs) if langs else "eng"


def _run(args: list[str], image: bytes) -> str:
    exe = _binary()
    if exe is None:
        raise UnreadableDocument(
            "The document is a scan and OCR is not installed.",
            hint="Install Tesseract (`apt-get install tesseract-ocr`, or `make ocr`), or use the Gemini backend.",
            code="image_only",
        )
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        proc = subprocess.run(
            [exe, "stdin", "stdout", *args], input=image, capture_output=True, timeout=_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise UnreadableDocument(f"OCR took longer than {_TIMEOUT_S} s on one page", code="ocr_timeout") from None
    if proc.returncode != 0:
        raise UnreadableDocument(f"OCR failed: {proc.stderr.decode(errors='replace').strip()[:200]}", code="ocr_failed")
    return proc.stdout.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- one page


def _tsv_words(tsv: str) -> list[tuple[tuple[int, int, int], str, float, float, float, float, float]]:
    """(line key, text, left, top, right, bottom, confidence) per recognised word, in pixels."""
    out = []
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if not text or row.get("level") != "5":
            continue
        conf = float(row.get("conf") or -1)
        if conf < 0:
            continue
        left, top = float(row["left"]), float(row["top"])
        key = (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))
        out.append((key, text, left, top, left + float(row["width"]), top + float(row["height"]), conf))
    return out


def _skew(words: list[tuple[tuple[int, int, int], str, float, float, float, float, float]]) -> float:
    """The page's skew in radians: the median slope of the bottoms of Tesseract's
    text lines (lines of three words or more, fitted by least squares)."""
    lines: dict[tuple[int, int, int], list[tuple[float, float]]] = defaultdict(list)
    for key, _t, x0, _y0, x1, y1, _c in words:
        lines[key].append(((x0 + x1) / 2, y1))
    slopes = []
    for pts in lines.values():
        if len(pts) < 3:
            continue
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        sxx = sum((p[0] - mx) ** 2 for p in pts)
        if sxx <= 0:
            continue
        slopes.append(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx)
    if not slopes:
        return 0.0
    return math.atan(statistics.median(slopes))


def _page_words(image: Any, page: int, scale: float) -> tuple[list[Word], float]:
    """Words of one page image (a PIL image), in points, upright; and their mean confidence."""
    png = _png(image)
    langs = _languages()
    words = _tsv_words(_run(["-l", langs, "--psm", "3", "tsv"], png))
    mean = statistics.fmean(w[6] for w in words) if words else 0.0
    if mean < _MIN_CONF or len(words) < 5:
        turned = _upright(image, png)
        if turned is not None:
            again = _tsv_words(_run(["-l", langs, "--psm", "3", "tsv"], _png(turned)))
            again_mean = statistics.fmean(w[6] for w in again) if again else 0.0
            if again_mean > mean:
                image, words, mean = turned, again, again_mean
    angle = _skew(words)
    cx, cy = image.width / 2, image.height / 2
    cos, sin = math.cos(-angle), math.sin(-angle)
    out = []
    for _key, text, x0, y0, x1, y1, _c in words:
        # rotate each box about the page centre by the skew; keep its size
        mx, my = (x0 + x1) / 2 - cx, (y0 + y1) / 2 - cy
        rx, ry = cx + mx * cos - my * sin, cy + mx * sin + my * cos
        hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
        out.append(Word(text, (rx - hw) * scale, (ry - hh) * scale, (rx + hw) * scale, (ry + hh) * scale, page))
    out.sort(key=lambda w: (w.top, w.x0))
    return out, mean


def _upright(image: Any, png: bytes) -> Any | None:
    """The image turned upright if Tesseract's orientation detection says it is not."""
    try:
        osd = _run(["--psm", "0"], png)
    except UnreadableDocument:
        return None  # no orientation data installed, or too little text to tell
    for line in osd.splitlines():
        if line.startswith("Rotate:"):
            deg = int(line.split(":", 1)[1].strip() or 0)
            return image.rotate(-deg, expand=True) if deg else None
    return None


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------- documents


def ocr_pdf(data: bytes, *, max_pages: int, dpi: int = RENDER_DPI) -> Document:
    """The words of an image-only PDF, page by page, by OCR."""
    import pypdfium2

    pdf = pypdfium2.PdfDocument(data)
    try:
        pages = []
        for i in range(min(len(pdf), max_pages)):
            page = pdf[i]
            width, height = page.get_size()
            image = page.render(scale=dpi / 72, grayscale=True).to_pil()
            words, _ = _page_words(image, i + 1, 72 / dpi)
            pages.append((width, height, words))
            page.close()
    finally:
        pdf.close()
    return build_document(pages)


def _frames(data: bytes) -> Iterator[Any]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as e:
        raise UnreadableDocument(f"The image cannot be read: {e}") from None
    for frame in ImageSequence.Iterator(img):
        yield frame.convert("L")


def ocr_image(data: bytes, *, max_pages: int) -> Document:
    """The words of an image (PNG, JPEG, or TIFF with one page per frame), by OCR.

    Page sizes are in points at the image's resolution (150 dpi assumed when
    the file does not say), so layout thresholds mean the same as for PDFs.
    """
    pages = []
    for i, frame in enumerate(_frames(data)):
        if i >= max_pages:
            break
        dpi = float((frame.info.get("dpi") or (150, 150))[0]) or 150.0
        scale = 72 / dpi
        words, _ = _page_words(frame, i + 1, scale)
        pages.append((frame.width * scale, frame.height * scale, words))
    return build_document(pages)
