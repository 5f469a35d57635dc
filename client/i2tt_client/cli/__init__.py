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

import sys

from .connection import make_client
from .health import run_health
from .inference import run_inference
from .parser import DEFAULT_TIMEOUT, build_parser

__all__ = ["main", "build_parser", "DEFAULT_TIMEOUT"]


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

