"""The ``i2tt`` command line.

    i2tt caption photo.jpg
    i2tt describe photos/ --output photos.jsonl --resume
    i2tt ground photo.jpg --draw boxes.png
    i2tt ocr --page letter.png --draw lines.png
    i2tt ocr --page scans/ --min-confidence 0.5 --output pages.jsonl
    i2tt tags "a dog running on a beach"
    i2tt health

Exit status: 0 when every input succeeded (or the server is healthy), 1 when at least one
input failed (or something is not ready), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import os
import stat
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .client import I2TTClient
from .errors import I2TTError, InvalidInputError
from .inputs import IMAGE_SUFFIXES, is_url
from .results import PageText

SERVER_ENV = "I2TT_SERVER"
API_KEY_ENV = "I2TT_API_KEY"
DEFAULT_SERVER = "localhost:8001"
# Every input ends within this (a stuck server or URL must not hold the output for ever).
DEFAULT_TIMEOUT = 120.0
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


# ---- inputs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Unreadable:
    """An entry of a folder that cannot be used (a symlink loop, a dangling link, an
    unlistable folder, a pipe): it gets an error row of its own."""

    path: str
    reason: str

    def __str__(self) -> str:
        return self.path


def expand_images(arguments: Iterable[str], stdin=None) -> list[str | Unreadable]:
    """Files as given, directories recursively (image files only, sorted), URLs as they
    are, and ``-`` for one path or URL per line of stdin."""
    found: list[str | Unreadable] = []
    for argument in arguments:
        if argument == "-":
            lines = [line.strip() for line in (stdin or sys.stdin)]
            found += expand_images([line for line in lines if line and line != "-"])
        elif is_url(argument):
            found.append(argument)
        elif os.path.isdir(argument):
            found += sorted(walk_images(argument), key=str)
        else:
            found.append(argument)  # a missing file becomes that item's error, not an abort
    return found


def walk_images(folder: str, ancestors: frozenset = frozenset()) -> list[str | Unreadable]:
    """Image files under ``folder``, following symlinks; what cannot be read is reported,
    never skipped in silence. ``ancestors`` (device, inode) of the folders above catch
    a link back up the tree."""
    try:
        status = os.stat(folder)
        identity = (status.st_dev, status.st_ino)
        if identity in ancestors:
            return [Unreadable(folder, f"symlink loop: {folder} leads back to a folder above it")]
        with os.scandir(folder) as entries:
            paths = [entry.path for entry in entries]
    except OSError as exc:
        return [Unreadable(folder, f"cannot list folder {folder}: {os_reason(exc)}")]
    found: list[str | Unreadable] = []
    for path in paths:
        try:
            mode = os.stat(path).st_mode  # follows links: loops and dangling links fail here
        except OSError as exc:
            found.append(Unreadable(path, f"cannot read {path}: {os_reason(exc)}"))
            continue
        if stat.S_ISDIR(mode):
            found += walk_images(path, ancestors | {identity})
        elif Path(path).suffix.lower() in IMAGE_SUFFIXES:
            found.append(path if stat.S_ISREG(mode)
                         else Unreadable(path, f"not a regular file: {path}"))
    return found


def os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "dangling symlink (its target does not exist)"
    return exc.strerror or str(exc)


def expand_texts(arguments: Iterable[str], stdin=None) -> list[str]:
    texts: list[str] = []
    for argument in arguments:
        if argument == "-":
            texts += [line.rstrip("\n") for line in (stdin or sys.stdin) if line.strip()]
        else:
            texts.append(argument)
    return texts


# ---- rows and output formats -----------------------------------------------------------

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


# ---- commands --------------------------------------------------------------------------

def read_api_key(args) -> str | None:
    """The API key from --api-key-file, else $I2TT_API_KEY (never from the command line,
    where other users could read it)."""
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SystemExit(f"i2tt: --api-key-file: cannot read {args.api_key_file}: "
                             f"{exc.strerror or exc}") from None
        if not key or "\n" in key:
            raise SystemExit(f"i2tt: --api-key-file: {args.api_key_file} must hold one "
                             "non-empty line")
        return key
    return os.environ.get(API_KEY_ENV, "").strip() or None


def make_client(args) -> I2TTClient:
    headers = {}
    for header in args.header or []:
        key, sep, value = header.partition("=")
        if not sep or not key:
            raise SystemExit(f"i2tt: --header wants KEY=VALUE, got {header!r}")
        headers[key.strip().lower()] = value  # gRPC metadata keys must be lower case
    return I2TTClient(args.server, ssl=args.ssl, root_certificates=args.root_certificates,
                      private_key=args.private_key, certificate_chain=args.certificate_chain,
                      api_key=read_api_key(args), headers=headers or None,
                      timeout=args.timeout or None, retries=args.retries,
                      max_in_flight=args.max_in_flight, url_timeout=args.url_timeout,
                      load_balancing=args.load_balancing)


def run_inference(args, client: I2TTClient) -> int:
    command = "ocr_page" if getattr(args, "page", False) else args.command
    if command == "tags":
        sources: list = expand_texts(args.inputs)
    else:
        sources = expand_images(args.inputs + (args.url or []))
    if not sources:
        raise SystemExit("i2tt: no inputs (give files, directories, URLs or - for stdin)")
    fmt = format_for(args)
    if args.resume and not args.output:
        raise SystemExit("i2tt: --resume needs --output FILE")
    draw_target = getattr(args, "draw", None)
    if draw_target and command == "ocr":
        raise SystemExit("i2tt: ocr --draw needs --page (one line has nothing to outline)")
    if draw_target and len(sources) > 1:
        Path(draw_target).mkdir(parents=True, exist_ok=True)
    min_confidence = getattr(args, "min_confidence", None)
    if min_confidence is not None and command != "ocr_page":
        raise SystemExit("i2tt: ocr --min-confidence needs --page (it leaves out a page's lines)")

    kept: list[dict] = []
    if args.resume:
        # Inputs that already have a good row are skipped; failed ones are tried again.
        kept = [restore(r, command, fmt) for r in read_rows(Path(args.output), fmt)
                if not r.get("error") and r.get("input") is not None]
        done = {r["input"] for r in kept}
        sources = [s for s in sources if str(s) not in done]

    stream = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    writer = Writer(stream, fmt, command)
    for record in kept:
        writer.write(record)

    failures = left_out = 0
    pending: dict[int, dict] = {}
    next_index = 0

    def finish(index: int, outcome: Any) -> None:
        # Rows are written in input order as soon as all earlier inputs are done; every
        # input ends (each has a deadline), so no row waits for ever.
        nonlocal failures, next_index, left_out
        if isinstance(outcome, I2TTError):
            failures += 1
        else:
            if min_confidence is not None:
                outcome, dropped = confident_lines(outcome, min_confidence)
                left_out += dropped
            if draw_target:
                drawn = draw_one(str(sources[index]), outcome, index, draw_target, len(sources))
                if drawn is not None:
                    outcome = drawn
                    failures += 1
        pending[index] = row(command, str(sources[index]), outcome)
        while next_index in pending:
            writer.write(pending.pop(next_index))
            next_index += 1

    # Entries that cannot be read are answered here; the rest go to the server.
    sent = [i for i, source in enumerate(sources) if not isinstance(source, Unreadable)]
    method: Callable = getattr(client, command)
    kwargs: dict[str, Any] = {"errors": "return",
                              "on_result": lambda i, outcome: finish(sent[i], outcome),
                              "progress": args.progress if args.progress is not None
                              else bool(args.output)}
    if getattr(args, "prompt", None) is not None:
        kwargs["prompt"] = args.prompt
    try:
        for index, source in enumerate(sources):
            if isinstance(source, Unreadable):
                finish(index, InvalidInputError(index, source.reason))
        if sent:
            method([sources[i] for i in sent], **kwargs)
    finally:
        writer.close()
        if args.output:
            stream.close()
    if min_confidence is not None:
        print(f"i2tt: --min-confidence {min_confidence:g} left out {left_out} "
              f"line{'' if left_out == 1 else 's'}", file=sys.stderr)
    return 1 if failures else 0


def confident_lines(page: PageText, threshold: float) -> tuple[PageText, int]:
    """The page without the lines read with less confidence than ``threshold`` (its text
    joined again from the lines kept), and how many it left out. A line without a
    confidence (a server from before CONFIDENCE) is kept: nothing says it is doubtful."""
    kept = [line for line in page.lines if line.confidence is None or line.confidence >= threshold]
    return PageText("\n".join(line.text for line in kept), kept), len(page.lines) - len(kept)


def draw_one(source: str, result, index: int, target: str, total: int) -> I2TTError | None:
    """Draw one result; a failure to draw becomes that input's error."""
    from .draw import save_drawing

    path = Path(target) if total == 1 else Path(target) / f"{index:05d}-{Path(source).stem or 'image'}.png"
    try:
        save_drawing(source, result, path)
    except I2TTError as exc:
        return exc
    except OSError as exc:
        return I2TTError(f"cannot draw to {path}: {exc}", index=index)
    return None


def run_health(args, client: I2TTClient) -> int:
    health = client.health(args.model) if args.model else client.health()
    fmt = args.format or "text"
    if fmt == "text":
        print(f"server   {health.server}")
        print(f"live     {'yes' if health.live else 'no'}")
        print(f"ready    {'yes' if health.ready else 'no'}")
        print(f"version  {health.version or '-'}")
        if health.error:
            print(f"error    {health.error}")
        width = max(len(m.name) for m in health.models) if health.models else 0
        for model in health.models:
            print(f"  {model.name:<{width}}  {'ready' if model.ready else 'NOT READY'}")
    elif fmt == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(["model", "ready", "server", "live", "server_ready", "version"])
        for model in health.models:
            out.writerow([model.name, model.ready, health.server, health.live, health.ready,
                          health.version or ""])
    else:
        print(json.dumps(health.to_dict(), indent=2 if fmt == "json" else None))
    return 0 if health.ok else 1


# ---- parser ----------------------------------------------------------------------------

def connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # Given twice (before and after the command): the copy after it must not overwrite a
    # value given before it with its default, hence SUPPRESS there.
    d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("server")
    group.add_argument("--server", default=d(os.environ.get(SERVER_ENV, DEFAULT_SERVER)),
                       help=f"gRPC address host:port (default: ${SERVER_ENV} or {DEFAULT_SERVER})")
    group.add_argument("--ssl", action="store_true", default=d(False), help="use TLS")
    group.add_argument("--root-certificates", metavar="PEM", default=d(None),
                       help="CA bundle to verify the server with (implies --ssl)")
    group.add_argument("--private-key", metavar="PEM", default=d(None),
                       help="client key for mutual TLS")
    group.add_argument("--certificate-chain", metavar="PEM", default=d(None),
                       help="client certificate for mutual TLS")
    group.add_argument("--api-key-file", metavar="PATH", default=d(None),
                       help=f"file holding the API key, sent as the i2tt-api-key header "
                            f"(default: ${API_KEY_ENV})")
    group.add_argument("--header", metavar="KEY=VALUE", action="append", default=d(None),
                       help="gRPC metadata sent with every call, e.g. authorization='Bearer x' "
                            "(repeatable)")
    group.add_argument("--load-balancing", metavar="POLICY", default=d(None),
                       help="gRPC load balancing over the addresses of the server's name, "
                            "e.g. round_robin with --server dns:///host:port")
    group.add_argument("--timeout", type=float, metavar="SECONDS", default=d(DEFAULT_TIMEOUT),
                       help="deadline of each input, from reading it to its answer, retries "
                            f"included (default {DEFAULT_TIMEOUT:g}; 0: none)")
    group.add_argument("--url-timeout", type=float, metavar="SECONDS", default=d(10.0),
                       help="total time to fetch an image URL (default 10)")
    group.add_argument("--retries", type=int, default=d(2),
                       help="retries when the server is unavailable or overloaded, within "
                            "the deadline (default 2)")
    group.add_argument("--max-in-flight", type=int, default=d(16), metavar="N",
                       help="concurrent requests (default 16)")


def output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--format", choices=FORMATS,
                       help="default: text, or from --output's extension (.json, .csv, "
                            "else jsonl)")
    group.add_argument("--output", "-o", metavar="FILE", help="write rows to FILE")
    group.add_argument("--resume", action="store_true",
                       help="skip inputs that already have a good row in --output")
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="progress bar on stderr (default: on with --output)")
    group.add_argument("--no-progress", dest="progress", action="store_false")


def probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i2tt", description="Caption, ground, read and tag images on an I2TT server.")
    connection_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    image_help = "image files, directories (recursive), http(s) URLs, or - for paths on stdin"
    specs = [("caption", "caption images (BLIP)"),
             ("ground", "grounded caption: caption plus entities with boxes (Kosmos-2)"),
             ("ocr", "read one line of text per image (TrOCR), or whole pages with --page"),
             ("describe", "caption plus tags (the caption_tags ensemble)")]
    for name, help_text in specs:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("inputs", nargs="*", metavar="IMAGE", help=image_help)
        sub.add_argument("--url", action="append", metavar="URL",
                         help="an image URL (repeatable; URLs may also be given as IMAGE)")
        if name in ("caption", "ground"):
            sub.add_argument("--prompt", help="text the caption starts from")
        if name == "ocr":
            sub.add_argument("--page", action="store_true",
                             help="whole pages: find the text lines and read them all "
                                  "(the ocr_page model); rows hold the text and each "
                                  "line's text, box and confidence")
            sub.add_argument("--min-confidence", type=probability, metavar="X",
                             help="with --page: leave out the lines read with a confidence "
                                  "below X (0..1); says on stderr how many it left out")
        if name in ("ground", "ocr"):
            sub.add_argument("--draw", metavar="OUT.png",
                             help="draw the boxes (entities; with ocr --page, the numbered "
                                  "lines): a PNG file for one image, a folder for several")
        output_options(sub)
        connection_options(sub, defaults=False)
    sub = commands.add_parser("tags", help="tags for text (T5)", description="tags for text (T5)")
    sub.add_argument("inputs", nargs="+", metavar="TEXT", help="texts, or - for one per line on stdin")
    output_options(sub)
    connection_options(sub, defaults=False)
    sub = commands.add_parser("health", help="server liveness, readiness, version and models")
    sub.add_argument("--model", action="append", help="models to check (default: all I2TT models)")
    sub.add_argument("--format", choices=FORMATS)
    connection_options(sub, defaults=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with make_client(args) as client:
            if args.command == "health":
                return run_health(args, client)
            return run_inference(args, client)
    except KeyboardInterrupt:
        print("i2tt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
