"""``sluice fields``: the presets, the field types and the known field names
with the printed labels (synonyms) each one is found by."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from common.core.field_catalog import CATALOG
from common.core.schema import PRESETS, FieldType

_TYPE_NOTES: dict[FieldType, str] = {
    FieldType.STRING: "text as printed (also: text)",
    FieldType.NUMBER: "a number; amounts without currency (also: amount)",
    FieldType.INTEGER: "a whole number",
    FieldType.DATE: "an ISO date YYYY-MM-DD, from any printed form",
    FieldType.CURRENCY: "an ISO 4217 code (EUR, USD ...)",
    FieldType.BOOLEAN: "true or false",
    FieldType.IBAN: "an IBAN without spaces; the mod-97 check must pass",
    FieldType.BIC: "a BIC / SWIFT code, 8 or 11 characters",
    FieldType.VAT_ID: "a VAT id with its country's format (DE123456789)",
    FieldType.EMAIL: "an e-mail address",
    FieldType.PHONE: "a phone number: digits, + for international",
    FieldType.PERCENTAGE: "a number of percent, 0-100",
    FieldType.ENUM: "one of the given choices: name:enum=a|b|c",
}


def add_fields_command(sub: Any) -> None:
    """Add ``fields`` to the ``sluice`` sub-commands (``sub`` from ``add_subparsers``)."""
    p = sub.add_parser("fields", help="list field presets, types and the known field names with their synonyms")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.set_defaults(func=_cmd_fields)


def listing() -> dict[str, Any]:
    return {
        "presets": {name: [s.name for s in specs] for name, specs in PRESETS.items()},
        "types": {t.value: _TYPE_NOTES[t] for t in FieldType},
        "fields": [
            {
                "name": k.name,
                "type": k.type.value,
                "description": k.description,
                "aliases": list(k.aliases),
                "synonyms": list(k.synonyms),
                "preset": k.preset or None,
            }
            for k in CATALOG.values()
        ],
    }


def _cmd_fields(args: argparse.Namespace) -> int:
    data = listing()
    out = sys.stdout
    if args.json:
        out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        return 0
    out.write("Presets (--preset NAME):\n")
    for name, names in data["presets"].items():
        out.write(f"  {name}: {', '.join(names)}\n")
    out.write("\nTypes (--fields name:type):\n")
    for t, note in data["types"].items():
        out.write(f"  {t:11} {note}\n")
    out.write("\nKnown fields (--fields name,...):\n")
    for f in data["fields"]:
        alias = f" (also: {', '.join(f['aliases'])})" if f["aliases"] else ""
        out.write(f"  {f['name']} [{f['type']}]{alias}\n      {f['description']}\n")
        if f["synonyms"]:
            out.write(f"      found by: {'; '.join(f['synonyms'])}\n")
    out.write(
        "\nOther names are searched as the label their words spell (order_ref -> 'Order Ref'); "
        "a suffix gives a type (_date, _amount, _rate, _iban, _email, _phone).\n"
    )
    return 0
