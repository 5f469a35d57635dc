"""Write rules.yaml's groups into the PrometheusRule of deploy/k8s/base/monitoring.yaml,
so the local stack and the cluster evaluate the same rules (a test checks they match).

    .venv/bin/python deploy/monitoring/sync_prometheusrule.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "rules.yaml"
MANIFEST = HERE.parent / "k8s" / "base" / "monitoring.yaml"
MARKER = "kind: PrometheusRule"


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):  # lists indented under keys
        return super().increase_indent(flow, False)


def _string(dumper, data):
    style = "|" if "\n" in data else (">" if len(data) > 80 else None)
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _string)


def main() -> int:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    text = MANIFEST.read_text()
    head = text[:text.index("spec:\n", text.index(MARKER))] + "spec:\n"
    body = yaml.dump({"groups": groups}, Dumper=_Dumper, sort_keys=False, width=100)
    MANIFEST.write_text(head + "".join(f"  {line}\n" for line in body.splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
