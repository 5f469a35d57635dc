"""The client the ``i2tt`` command's arguments ask for."""

from __future__ import annotations

import os
from pathlib import Path

from ..client import I2TTClient
from .parser import API_KEY_ENV


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
