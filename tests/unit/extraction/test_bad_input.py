"""Bad input is refused with UnreadableDocument and a clear message."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.core.errors import PermanentError, UnreadableDocument
from common.core.schema import INVOICE_PRESET
from common.extraction.offline import extract_pdf
from tests.unit.extraction._pdfs import deflate_zeros, image_only_pdf, raw_pdf, text_pdf

ROOT = Path(__file__).resolve().parents[3]
GOOD = [[(50, 80, "Invoice No: A-1", 11), (50, 100, "Date: 2024-01-31", 11), (300, 400, "Total: 12.50 EUR", 11)]]


def _refused(data: bytes, *, max_pages: int = 200, max_bytes: int = 50 * 1024 * 1024) -> str:
    with pytest.raises(UnreadableDocument) as exc:
        extract_pdf(data, INVOICE_PRESET, max_pages=max_pages, max_bytes=max_bytes)
    assert isinstance(exc.value, PermanentError)
    return str(exc.value).lower()


def test_good_pdf_is_read() -> None:
    res = extract_pdf(text_pdf(GOOD), INVOICE_PRESET)
    assert res.results[0][:4] == ["A-1", "2024-01-31", 12.5, "EUR"]


def test_zero_bytes() -> None:
    assert "empty" in _refused(b"")


def test_not_a_pdf() -> None:
    assert "not a pdf" in _refused(b"<html><body>hello</body></html>")


def test_truncated() -> None:
    data = text_pdf(GOOD)
    assert "truncated" in _refused(data[: len(data) // 2])


def test_corrupt_body() -> None:
    data = b"%PDF-1.7\n" + b"\x00garbage" * 500 + b"\n%%EOF\n"
    assert "corrupt" in _refused(data)


def test_encrypted() -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(text_pdf(GOOD))).pages:
        writer.add_page(page)
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    buf = io.BytesIO()
    writer.write(buf)
    msg = _refused(buf.getvalue())
    assert "encrypted" in msg and "password" in msg


def test_image_only_needs_ocr_or_gemini() -> None:
    msg = _refused(image_only_pdf())
    assert "ocr" in msg and "gemini" in msg


def test_over_max_bytes() -> None:
    data = text_pdf(GOOD)
    assert "limit" in _refused(data, max_bytes=len(data) - 1)


def test_over_max_pages() -> None:
    data = text_pdf(GOOD * 3)
    assert "3 pages" in _refused(data, max_pages=2)


def test_filename_is_named_in_the_message() -> None:
    with pytest.raises(UnreadableDocument, match=r"scan\.pdf"):
        extract_pdf(b"", INVOICE_PRESET, filename="scan.pdf")


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300 KB PDF whose page content inflates to 256 MiB (plus a nested variant)."""
    d = tmp_path_factory.mktemp("bomb")
    (d / "bomb.pdf").write_bytes(raw_pdf(deflate_zeros(256 << 20)))
    (d / "nested.pdf").write_bytes(raw_pdf(deflate_zeros(256 << 20, layers=2), filters="[/FlateDecode /FlateDecode]"))
    return d


@pytest.mark.parametrize("name", ["bomb.pdf", "nested.pdf"])
def test_decompression_bomb_is_refused_without_exhausting_memory(bomb_file: Path, name: str) -> None:
    """Run in a fresh interpreter and compare its peak RSS with the bomb's size:
    the stream is never inflated in full (by the guard or by PDFium)."""
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        from pathlib import Path
        from common.core.errors import UnreadableDocument
        from common.core.schema import INVOICE_PRESET
        from common.extraction.offline import extract_pdf
        import pypdfium2  # load the native library before measuring the baseline
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        data = Path({str(bomb_file / name)!r}).read_bytes()
        try:
            extract_pdf(data, INVOICE_PRESET)
            outcome = "extracted"
        except UnreadableDocument as e:
            outcome = str(e)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"outcome": outcome, "grew_kib": peak - base}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "decompression bomb" in result["outcome"]
    assert result["grew_kib"] < 64 * 1024, result  # far below the 256 MiB the stream holds


def test_small_flate_streams_pass_the_guard() -> None:
    import zlib

    from common.extraction.guards import scan_streams

    data = raw_pdf(zlib.compress(b"BT /F1 12 Tf 50 700 Td (Total 12.50) Tj ET"))
    assert 0 < scan_streams(data) < 100


def test_import_does_not_load_pdf_libraries() -> None:
    """Cold start: importing the extractor must not import the PDF libraries."""
    code = (
        "import sys, common.extraction.offline, common.extraction; "
        "print([m for m in ('pdfplumber','pypdf','pdfminer','pypdfium2','reportlab') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_image_only_without_an_ocr_engine_says_how_to_install_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_TESSERACT", "/nonexistent/tesseract")
    with pytest.raises(UnreadableDocument) as exc:
        extract_pdf(image_only_pdf(), INVOICE_PRESET)
    assert "ocr is not installed" in str(exc.value).lower()
    assert exc.value.hint is not None and "tesseract" in exc.value.hint.lower()
