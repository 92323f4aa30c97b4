"""Document extraction: the offline text-layer extractor and the e-invoice XML reader.

``extract_pdf`` is the public entry point; importing this package does not
import any PDF library (they load on the first call).
"""

from common.extraction.offline import extract_pdf

__all__ = ["extract_pdf"]
