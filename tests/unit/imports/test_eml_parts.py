"""Which parts of a saved e-mail are attachments, and how they are identified."""

from __future__ import annotations

from email.message import EmailMessage

from common.imports.eml import eml_attachments, parse_eml


def _email() -> bytes:
    inner = EmailMessage()
    inner["Subject"] = "forwarded"
    inner.set_content("see attached")
    inner.add_attachment(b"%PDF-inner", maintype="application", subtype="pdf", filename="inner.pdf")
    msg = EmailMessage()
    msg["Subject"] = "outer"
    msg.set_content("body text")
    msg.add_attachment(b"%PDF-first", maintype="application", subtype="pdf", filename="first.pdf")
    msg.add_attachment(inner)  # message/rfc822
    msg.add_attachment(b"PK\x03\x04zip", maintype="application", subtype="octet-stream", filename="b.zip")
    return msg.as_bytes()


def test_named_leaf_parts_depth_first_with_indexed_ids() -> None:
    atts = eml_attachments(parse_eml(_email()), key="k")
    assert [(a.external_id, a.name) for a in atts] == [
        ("eml:k:0", "first.pdf"),
        ("eml:k:1", "inner.pdf"),
        ("eml:k:2", "b.zip"),
    ]
    assert atts[0].load() == b"%PDF-first"
    assert atts[2].declared_type == "application/octet-stream"


def test_raw_8bit_latin1_filename_is_read_as_latin1() -> None:
    raw = (
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="fa\xe7ade.pdf"\r\n\r\n'
        b"%PDF-\r\n--B--\r\n"
    )
    (att,) = eml_attachments(parse_eml(raw), key="k")
    assert att.name == "façade.pdf"
