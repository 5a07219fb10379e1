"""The config's JSON schema (workflow/schemas/config.schema.yaml): types, allowed values and defaults.

Cross-key rules a schema cannot express are in :mod:`inilora.config.checks`.
"""

from __future__ import annotations

from pathlib import Path

import yaml


SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def validate_schema(config: dict) -> dict:
    """jsonschema validation with defaults filled in (what snakemake.utils.validate does)."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, schema):
        for name, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub:
                instance.setdefault(name, sub["default"])
        yield from validator_cls.VALIDATORS["properties"](validator, properties, instance, schema)

    extended = jsonschema.validators.extend(validator_cls, {"properties": set_defaults})
    errors = sorted(extended(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.path) or "(top level)"
        raise ConfigError(f"config key '{key}': {e.message}")
    return config
