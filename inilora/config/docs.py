"""config/README.md from the schema's descriptions: ``python -m inilora.config.docs > config/README.md``.

tests/test_config.py checks that the committed file is what this prints, so the two never drift.
"""

from __future__ import annotations

import json

import yaml

from inilora.config.schema import SCHEMA


def _type(node: dict) -> str:
    if "enum" in node:
        return "one of " + ", ".join(str(v) for v in node["enum"])
    t = node.get("type", "")
    return " or ".join(t) if isinstance(t, list) else str(t)


def _default(node: dict) -> str:
    return f"`{json.dumps(node['default'])}`" if "default" in node else "required" if node.get("_required") else ""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(node: dict, prefix: str = "") -> list[str]:
    """One table row per key, nested sections (objects with their own properties) after their parent."""
    out = []
    required = set(node.get("required", []))
    for key, sub in node.get("properties", {}).items():
        name = f"{prefix}{key}"
        default = _default({**sub, "_required": key in required})
        out.append(f"| `{name}` | {_type(sub)} | {_cell(default)} | {_cell(sub.get('description', ''))} |")
        if "properties" in sub:
            out += rows(sub, f"{name}.")
        entry = sub.get("additionalProperties")
        if isinstance(entry, dict) and "properties" in entry:  # a map of named entries (models, tasks, ...)
            out += rows(entry, f"{name}.<name>.")
    return out


def render() -> str:
    schema = yaml.safe_load(SCHEMA.read_text())
    lines = ["# Configuration keys", "",
             "Generated from `workflow/schemas/config.schema.yaml` by `make config-docs`; do not edit by hand.",
             "The embedded default is `config.yaml` at the repository root; a preset given with `--configfile`",
             "(`workflow/presets/`) replaces it. Every key is checked before any job runs; a bad value stops the",
             "workflow with a message naming the key, the value and what is allowed.", "",
             f"{_cell(schema.get('description', ''))}", "",
             "| key | type | default | meaning |", "|---|---|---|---|", *rows(schema), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
