"""Benchmark the offline extractor against the invoice corpus.

Usage (from the repo root)::

    .venv/bin/python bench/extraction.py [-v] [--ocr=N] [DOCS_DIR [TRUTH_DIR]]

DOCS_DIR defaults to ``../shared/corpus/docs`` relative to the repo root and
TRUTH_DIR to ``truth/`` next to it. Scores each preset field per file and per
distinct invoice number (the corpus renders some invoices several times), prints a
table and the speed, and ends with exactly one JSON line of figures.

Also: the confidence of right and wrong core values (a calibrated extractor
gives wrong values lower ones); precision and recall of the typed custom
fields due_date, iban, vat_id and order_number against
``bench/labels/custom_fields.json``; and, unless ``--ocr=0``, the core fields
on image-only renderings (:func:`scan_pdf`: 150 dpi, noise, 1-3 degrees) of one
file per distinct invoice (``--ocr=N``: the first N), next to the text layer's
accuracy on the same files, with OCR pages/s.

Scoring: dates compare as ISO strings, totals as numbers within 0.01,
strings after collapsing whitespace and case. Fields whose ground truth is
null are not scored (the count ``n`` says how many were).
"""

from __future__ import annotations

import io
import json
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.core.errors import UnreadableDocument  # noqa: E402
from common.core.schema import INVOICE_PRESET, fields_from_names  # noqa: E402
from common.extraction.offline import extract_pdf  # noqa: E402

FIELDS = [f.name for f in INVOICE_PRESET]
CORE = ["invoice_number", "date", "total", "currency"]
CUSTOM = ["due_date", "iban", "vat_id", "order_number"]
LABELS = ROOT / "bench" / "labels" / "custom_fields.json"


def _norm(v: Any) -> str:
    return re.sub(r"\s+", " ", str(v)).strip().casefold()


def correct(field: str, got: Any, want: Any) -> bool:
    if got is None:
        return False
    if field == "total":
        try:
            return abs(float(got) - float(want)) <= 0.01
        except (TypeError, ValueError):
            return False
    return _norm(got) == _norm(want)


def scan_pdf(data: bytes, *, seed: int, dpi: int = 150, max_pages: int = 2, noise: float = 10.0) -> bytes:
    """``data``'s first pages as a scan: rendered at ``dpi`` in grey, turned 1-3 degrees
    (either way), light noise, written as a PDF with no text layer."""
    import pypdfium2
    from PIL import Image

    rnd = random.Random(seed)
    pdf = pypdfium2.PdfDocument(data)
    images = []
    try:
        for i in range(min(len(pdf), max_pages)):
            img = pdf[i].render(scale=dpi / 72, grayscale=True).to_pil().convert("L")
            angle = rnd.choice((-1, 1)) * rnd.uniform(1.0, 3.0)
            img = img.rotate(angle, expand=True, fillcolor=255, resample=Image.Resampling.BICUBIC)
            grain = Image.effect_noise(img.size, noise)  # centred on 128
            img = Image.eval(Image.blend(img, grain, 0.12), lambda v: min(255, int(v * 1.14)))
            images.append(img)
    finally:
        pdf.close()
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return buf.getvalue()


def _acc(xs: list[bool]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def _auc(right: list[float], wrong: list[float]) -> float:
    """The chance that a right value has a higher confidence than a wrong one (ties count half)."""
    if not right or not wrong:
        return 1.0
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return round(wins / (len(right) * len(wrong)), 3)


def _truth(truth_dir: Path, path: Path) -> dict[str, Any]:
    tpath = truth_dir / (path.stem + ".json")
    return json.loads(tpath.read_text()) if tpath.exists() else {}


def score_core(files: list[Path], truth_dir: Path, *, transform: Any = None) -> dict[str, Any]:
    """Core/preset fields per file and per distinct invoice; confidences of right
    and wrong values; pages/s. ``transform`` turns a PDF into what is extracted
    (an image-only rendering for the OCR figures)."""
    per_field: dict[str, list[bool]] = defaultdict(list)
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    conf_right: list[float] = []
    conf_wrong: list[float] = []
    pages = 0
    elapsed = 0.0
    errors = 0
    misses: list[str] = []
    for n, path in enumerate(files):
        truth = _truth(truth_dir, path)
        data = path.read_bytes()
        if transform is not None:
            data = transform(data, n)
        t0 = time.perf_counter()
        try:
            res = extract_pdf(data, INVOICE_PRESET, filename=path.name)
        except UnreadableDocument as e:
            elapsed += time.perf_counter() - t0
            errors += 1
            print(f"ERROR {path.name}: {e}", file=sys.stderr)
            row: dict[str, Any] = {}
            confs: dict[str, float] = {}
        else:
            elapsed += time.perf_counter() - t0
            pages += res.pages
            row = dict(zip(res.columns, res.results[0], strict=True))
            confs = {k: v.confidence for k, v in res.fields.items()}
        key = str(truth.get("invoice_number"))
        for f in FIELDS:
            want = truth.get(f)
            if want is None:
                continue
            ok = correct(f, row.get(f), want)
            per_field[f].append(ok)
            groups[key][f].append(ok)
            if f in CORE and f in confs:
                (conf_right if ok else conf_wrong).append(confs[f])
            if not ok:
                misses.append(f"  {path.stem[:70]:70} {f:14} got={row.get(f)!r} want={want!r}")
    by_invoice: dict[str, float] = {}
    for f in FIELDS:
        vals = [sum(g[f]) / len(g[f]) for g in groups.values() if g.get(f)]
        by_invoice[f] = round(sum(vals) / len(vals), 4) if vals else 0.0
    core_inv = [sum(g[f]) / len(g[f]) for g in groups.values() for f in CORE if g.get(f)]
    return {
        "files": len(files),
        "distinct_invoices": len(groups),
        "errors": errors,
        "pages": pages,
        "seconds": round(elapsed, 2),
        "pages_per_s": round(pages / elapsed, 2) if elapsed else 0.0,
        "accuracy": {f: _acc(per_field[f]) for f in FIELDS},
        "accuracy_per_invoice": by_invoice,
        "overall": _acc([x for f in FIELDS for x in per_field[f]]),
        "overall_core": _acc([x for f in CORE for x in per_field[f]]),
        "overall_core_per_invoice": round(sum(core_inv) / len(core_inv), 4) if core_inv else 0.0,
        "confidence": {
            "mean_right": round(statistics.fmean(conf_right), 3) if conf_right else None,
            "mean_wrong": round(statistics.fmean(conf_wrong), 3) if conf_wrong else None,
            "auc": _auc(conf_right, conf_wrong),
            "n_wrong": len(conf_wrong),
        },
        "misses": misses,
    }


def score_custom(files: list[Path], labels_path: Path) -> dict[str, Any]:
    """Precision and recall of typed custom fields against the labels file."""
    labels = json.loads(labels_path.read_text())["labels"]
    specs = fields_from_names(CUSTOM)
    tp: dict[str, int] = defaultdict(int)
    predicted: dict[str, int] = defaultdict(int)
    expected: dict[str, int] = defaultdict(int)
    misses: list[str] = []
    for path in files:
        if path.stem not in labels:
            continue
        res = extract_pdf(path.read_bytes(), specs, filename=path.name)
        row = dict(zip(res.columns, res.results[0], strict=True))
        for f in CUSTOM:
            want = labels[path.stem].get(f)
            got = row.get(f)
            expected[f] += want is not None
            predicted[f] += got is not None
            ok = got is not None and want is not None and str(got) == str(want)
            tp[f] += ok
            if (got is not None or want is not None) and not ok:
                misses.append(f"  {path.stem[:70]:70} {f:14} got={got!r} want={want!r}")
    out: dict[str, Any] = {"fields": {}, "misses": misses}
    for f in CUSTOM:
        p = tp[f] / predicted[f] if predicted[f] else 1.0
        r = tp[f] / expected[f] if expected[f] else 1.0
        out["fields"][f] = {"precision": round(p, 3), "recall": round(r, 3), "n": expected[f]}
    all_tp, all_pred, all_exp = sum(tp.values()), sum(predicted.values()), sum(expected.values())
    out["precision"] = round(all_tp / all_pred, 3) if all_pred else 1.0
    out["recall"] = round(all_tp / all_exp, 3) if all_exp else 1.0
    return out


def _one_per_invoice(files: list[Path], truth_dir: Path, limit: int) -> list[Path]:
    seen: dict[str, Path] = {}
    for p in files:
        seen.setdefault(str(_truth(truth_dir, p).get("invoice_number")), p)
    return list(seen.values())[:limit]


def _print_core(title: str, r: dict[str, Any]) -> None:
    print(f"== {title}")
    print(f"{'field':16}{'per file':>10}{'per invoice':>13}")
    for f in FIELDS:
        print(f"{f:16}{r['accuracy'][f]:>10.3f}{r['accuracy_per_invoice'][f]:>13.3f}")
    print(f"{'overall':16}{r['overall']:>10.3f}")
    print(f"{'overall (core 4)':16}{r['overall_core']:>10.3f}{r['overall_core_per_invoice']:>13.3f}")
    c = r["confidence"]
    print(
        f"confidence of core values: right {c['mean_right']}, wrong {c['mean_wrong']} "
        f"(n={c['n_wrong']}), P(right > wrong) {c['auc']}"
    )
    print(
        f"files {r['files']}, distinct invoices {r['distinct_invoices']}, errors {r['errors']}, "
        f"pages {r['pages']}, {r['seconds']} s, {r['pages_per_s']} pages/s"
    )


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if not a.startswith("-")]
    verbose = "-v" in argv or "--misses" in argv
    ocr_n = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--ocr=")), 22)
    docs = Path(args[0]) if args else ROOT / ".." / "shared" / "corpus" / "docs"
    truth_dir = Path(args[1]) if len(args) > 1 else docs.parent / "truth"
    files = sorted(docs.glob("*.pdf"))
    if not files:
        print(f"no PDFs in {docs}", file=sys.stderr)
        return 2
    text = score_core(files, truth_dir)
    custom = score_custom(files, LABELS)
    if verbose:
        print("misses (text layer):\n" + "\n".join(text["misses"]))
        print("misses (custom fields):\n" + "\n".join(custom["misses"]))
    _print_core("text layer", text)
    print("== custom fields (labels: bench/labels/custom_fields.json)")
    for f, v in custom["fields"].items():
        print(f"{f:16} precision {v['precision']:.3f} recall {v['recall']:.3f} (n={v['n']})")
    print(f"{'all':16} precision {custom['precision']:.3f} recall {custom['recall']:.3f}")

    figures: dict[str, Any] = {k: v for k, v in text.items() if k != "misses"}
    figures["custom_fields"] = {k: v for k, v in custom.items() if k != "misses"}
    if ocr_n > 0:
        from common.extraction import ocr

        if not ocr.available():
            print("OCR not installed (make ocr): no scan figures", file=sys.stderr)
        else:
            subset = _one_per_invoice(files, truth_dir, ocr_n)
            same = score_core(subset, truth_dir)
            scans = score_core(subset, truth_dir, transform=lambda d, n: scan_pdf(d, seed=n, max_pages=2))
            if verbose:
                print("misses (scans):\n" + "\n".join(scans["misses"]))
            _print_core(f"text layer, same {len(subset)} files as the scans", same)
            _print_core("scans: 150 dpi, noise, 1-3 degrees, image-only PDF (first 2 pages)", scans)
            ratio = round(scans["overall_core"] / same["overall_core"], 3) if same["overall_core"] else 0.0
            print(f"OCR core accuracy / text-layer core accuracy on the same files: {ratio}")
            figures["ocr"] = {
                "files": len(subset),
                "overall_core": scans["overall_core"],
                "text_layer_overall_core_same_files": same["overall_core"],
                "ratio_to_text_layer": ratio,
                "pages_per_s": scans["pages_per_s"],
                "accuracy": scans["accuracy"],
                "confidence": scans["confidence"],
            }
    print(json.dumps({"bench": "extraction", **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
