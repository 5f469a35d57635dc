"""``i2tt health``."""

from __future__ import annotations

import csv
import json
import sys

from ..client import I2TTClient


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
