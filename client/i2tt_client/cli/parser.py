"""The ``i2tt`` command's arguments."""

from __future__ import annotations

import argparse
import os

from .formats import FORMATS

SERVER_ENV = "I2TT_SERVER"
API_KEY_ENV = "I2TT_API_KEY"
DEFAULT_SERVER = "localhost:8001"
# Every input ends within this (a stuck server or URL must not hold the output for ever).
DEFAULT_TIMEOUT = 120.0


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
