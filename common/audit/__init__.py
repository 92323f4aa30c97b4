"""Document audits: auditors that check a PDF against rules given per job.

Each auditor is a function over one document and the job's settings that
returns an :class:`~common.audit.report.AuditorResult` (its findings, per
page and severity). ``disclaimer``, ``format`` and ``logo`` run offline;
``grammar`` asks a text model page by page and is skipped ("needs a model")
without one. :func:`common.audit.report.merge` makes the report of a
document from its auditors' results. The ``audit`` job kind runs each auditor
as its own work item (``common/kinds/audit.py``).

The PDF libraries (pypdfium2, OpenCV) are imported inside the functions that
use them, so importing this package stays cheap.
"""

from __future__ import annotations

AUDITORS = ("disclaimer", "format", "logo", "grammar")
