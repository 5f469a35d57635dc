"""Rows of the ``i2tt`` command's output and its formats (text, json, jsonl, csv), written
as results arrive and read back for ``--resume``."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path
from typing import Any

from ..errors import I2TTError

FORMATS = ("text", "json", "jsonl", "csv")
# Columns of each command's rows (csv header; order of fields in text output).
COLUMNS = {
    "caption": ["caption", "confidence"],
    "ground": ["caption", "confidence", "entities"],
    "ocr": ["text", "confidence"],
    "ocr_page": ["text", "lines"],  # i2tt ocr --page; each line has its confidence
    "tags": ["tags"],
    "describe": ["caption", "tags"],
}


def row(command: str, source: str, outcome: Any) -> dict:
    record: dict[str, Any] = {"input": source}
    if isinstance(outcome, I2TTError):
        record.update({column: None for column in COLUMNS[command]})
        record["error"] = f"{type(outcome).__name__}: {outcome.message}"
    else:
        record.update(outcome.to_dict())
        record["error"] = None
    return record


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def printable(value) -> str:
    """A value as the text format shows it, one row per line: control characters and line
    separators (which OCR of noise produces, and which a terminal acts on) escaped."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if ch != "\t" and unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
                   for ch in str(value))


def text_block(command: str, record: dict) -> str:
    lines = [printable(record["input"])]
    if record.get("error"):
        return "\n".join(lines + [f"  error: {printable(record['error'])}"]) + "\n"
    for column in COLUMNS[command]:
        value = record.get(column)
        if column == "lines":
            # the page's text, line by line, each with its box and confidence (the text
            # column repeats it)
            for line in value or []:
                box = ", ".join(f"{c:.3f}" for c in line["box"])
                known = line.get("confidence") is not None
                confidence = f"({line['confidence']:.3f}) " if known else ""
                lines.append(f"  - [{box}] {confidence}{printable(line['text'])}")
            continue
        if command == "ocr_page" and column == "text":
            continue
        if column == "entities":
            for entity in value or []:
                boxes = " ".join("[" + ", ".join(f"{c:.3f}" for c in box) + "]"
                                 for box in entity["boxes"])
                lines.append(f"  - {printable(entity['phrase'])}: {boxes}")
        elif isinstance(value, list):
            lines.append(f"  {column}: {printable(', '.join(value))}")
        elif isinstance(value, float):
            lines.append(f"  {column}: {value:.3f}")
        else:
            lines.append(f"  {column}: {printable(value)}")
    return "\n".join(lines) + "\n"


class Writer:
    """Writes rows in one format, streaming, so an interrupted job keeps what it did."""

    def __init__(self, stream, fmt: str, command: str):
        self.stream, self.fmt, self.command = stream, fmt, command
        self.count = 0
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, ["input", *COLUMNS[command], "error"],
                                      extrasaction="ignore")
            self.csv.writeheader()
        elif fmt == "json":
            stream.write("[")

    def write(self, record: dict) -> None:
        if self.fmt == "csv":
            self.csv.writerow({k: csv_cell(v) for k, v in record.items()})
        elif self.fmt == "jsonl":
            self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif self.fmt == "json":
            self.stream.write(("," if self.count else "") + "\n  "
                              + json.dumps(record, ensure_ascii=False))
        else:
            self.stream.write(text_block(self.command, record))
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n")
        self.stream.flush()


def read_rows(path: Path, fmt: str) -> list[dict]:
    """Rows of an earlier (possibly interrupted) output file."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if not text.strip():
        return []
    if fmt == "jsonl":
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut short by an interruption: that input is redone
        return rows
    if fmt == "csv":
        return [dict(r) for r in csv.DictReader(io.StringIO(text))]
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError:  # interrupted before the closing bracket
            return json.loads(text.rstrip().rstrip(",") + "\n]")
    raise SystemExit(f"i2tt: --resume needs --format json, jsonl or csv, not {fmt}")


def restore(record: dict, command: str, fmt: str) -> dict:
    """A row read back from csv holds strings; give it back its JSON shape."""
    if fmt != "csv":
        return record
    restored: dict[str, Any] = {"input": record.get("input")}
    for column in COLUMNS[command]:
        value = record.get(column) or ""
        if column == "tags":
            restored[column] = [t for t in value.split("; ") if t]
        elif column in ("entities", "lines"):
            restored[column] = json.loads(value) if value else []
        elif column == "confidence":
            restored[column] = float(value) if value else None
        else:
            restored[column] = value
    restored["error"] = record.get("error") or None
    return restored


def format_for(args) -> str:
    if args.format:
        return args.format
    if args.output:
        suffix = Path(args.output).suffix.lower()
        return {".json": "json", ".csv": "csv", ".txt": "text"}.get(suffix, "jsonl")
    return "text"
