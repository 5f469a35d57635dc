"""``i2tt caption|ground|ocr|tags|describe``: inputs in, one row per input out, in input
order, as the answers arrive."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from ..client import I2TTClient
from ..errors import I2TTError, InvalidInputError
from ..results import PageText
from .formats import Writer, format_for, read_rows, restore, row
from .sources import Unreadable, expand_images, expand_texts


def run_inference(args, client: I2TTClient) -> int:
    command = "ocr_page" if getattr(args, "page", False) else args.command
    sources = gather_sources(args, command)
    fmt = format_for(args)
    check_options(args, command, len(sources))
    kept = resumed_rows(args, command, fmt) if args.resume else []
    done = {r["input"] for r in kept}
    sources = [s for s in sources if str(s) not in done]

    stream = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    writer = Writer(stream, fmt, command)
    for record in kept:
        writer.write(record)
    rows = RowsInOrder(writer, command, sources, getattr(args, "min_confidence", None),
                       getattr(args, "draw", None))
    try:
        send(args, client, command, sources, rows)
    finally:
        writer.close()
        if args.output:
            stream.close()
    if rows.min_confidence is not None:
        print(f"i2tt: --min-confidence {rows.min_confidence:g} left out {rows.left_out} "
              f"line{'' if rows.left_out == 1 else 's'}", file=sys.stderr)
    return 1 if rows.failures else 0


def gather_sources(args, command: str) -> list:
    if command == "tags":
        sources: list = expand_texts(args.inputs)
    else:
        sources = expand_images(args.inputs + (args.url or []))
    if not sources:
        raise SystemExit("i2tt: no inputs (give files, directories, URLs or - for stdin)")
    return sources


def check_options(args, command: str, count: int) -> None:
    """Refuses options that do not go together; makes the --draw folder for several inputs."""
    if args.resume and not args.output:
        raise SystemExit("i2tt: --resume needs --output FILE")
    draw_target = getattr(args, "draw", None)
    if draw_target and command == "ocr":
        raise SystemExit("i2tt: ocr --draw needs --page (one line has nothing to outline)")
    if draw_target and count > 1:
        Path(draw_target).mkdir(parents=True, exist_ok=True)
    min_confidence = getattr(args, "min_confidence", None)
    if min_confidence is not None and command != "ocr_page":
        raise SystemExit("i2tt: ocr --min-confidence needs --page (it leaves out a page's lines)")


def resumed_rows(args, command: str, fmt: str) -> list[dict]:
    """The good rows of the earlier output: their inputs are skipped; failed ones are tried
    again."""
    return [restore(r, command, fmt) for r in read_rows(Path(args.output), fmt)
            if not r.get("error") and r.get("input") is not None]


def send(args, client: I2TTClient, command: str, sources: list, rows: "RowsInOrder") -> None:
    """Entries that cannot be read are answered here; the rest go to the server."""
    sent = [i for i, source in enumerate(sources) if not isinstance(source, Unreadable)]
    method: Callable = getattr(client, command)
    kwargs: dict[str, Any] = {"errors": "return",
                              "on_result": lambda i, outcome: rows.finish(sent[i], outcome),
                              "progress": args.progress if args.progress is not None
                              else bool(args.output)}
    if getattr(args, "prompt", None) is not None:
        kwargs["prompt"] = args.prompt
    for index, source in enumerate(sources):
        if isinstance(source, Unreadable):
            rows.finish(index, InvalidInputError(index, source.reason))
    if sent:
        method([sources[i] for i in sent], **kwargs)


class RowsInOrder:
    """Each input's outcome made a row (lines below --min-confidence left out, --draw
    drawn) and written in input order, as soon as all earlier inputs are done; every
    input ends (each has a deadline), so no row waits for ever."""

    def __init__(self, writer: Writer, command: str, sources: list,
                 min_confidence: float | None, draw_target: str | None):
        self.writer, self.command, self.sources = writer, command, sources
        self.min_confidence, self.draw_target = min_confidence, draw_target
        self.failures = self.left_out = 0
        self.pending: dict[int, dict] = {}
        self.next_index = 0

    def finish(self, index: int, outcome: Any) -> None:
        if isinstance(outcome, I2TTError):
            self.failures += 1
        else:
            if self.min_confidence is not None:
                outcome, dropped = confident_lines(outcome, self.min_confidence)
                self.left_out += dropped
            if self.draw_target:
                drawn = draw_one(str(self.sources[index]), outcome, index, self.draw_target,
                                 len(self.sources))
                if drawn is not None:
                    outcome = drawn
                    self.failures += 1
        self.pending[index] = row(self.command, str(self.sources[index]), outcome)
        while self.next_index in self.pending:
            self.writer.write(self.pending.pop(self.next_index))
            self.next_index += 1


def confident_lines(page: PageText, threshold: float) -> tuple[PageText, int]:
    """The page without the lines read with less confidence than ``threshold`` (its text
    joined again from the lines kept), and how many it left out. A line without a
    confidence (a server from before CONFIDENCE) is kept: nothing says it is doubtful."""
    kept = [line for line in page.lines if line.confidence is None or line.confidence >= threshold]
    return PageText("\n".join(line.text for line in kept), kept), len(page.lines) - len(kept)


def draw_one(source: str, result, index: int, target: str, total: int) -> I2TTError | None:
    """Draw one result; a failure to draw becomes that input's error."""
    from ..draw import save_drawing

    path = Path(target) if total == 1 else Path(target) / f"{index:05d}-{Path(source).stem or 'image'}.png"
    try:
        save_drawing(source, result, path)
    except I2TTError as exc:
        return exc
    except OSError as exc:
        return I2TTError(f"cannot draw to {path}: {exc}", index=index)
    return None
