"""The config's JSON Schema (shipped with the package; ``workflow/schemas/`` links to it) and its problems,
one line each: ``Invalid configuration: <key>: <problem>``, with the full key path and a did-you-mean,
whether ``finetune-hpo validate`` or Snakemake's ``validate`` found them."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

# The schemas ship with the package (so a non-editable install has them); workflow/schemas/ links here,
# so Snakemake validates against the same files.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
OPTIMAL_SCHEMA = SCHEMA_DIR / "optimal.schema.yaml"


class ConfigError(ValueError):
    """Errors in the user's configuration: one line per problem, ``Invalid configuration: <key>: <problem>``,
    each naming the key and what to do."""

    def __init__(self, *problems: str) -> None:
        # A search space shared by several tasks fails once per task: named once.
        self.problems: tuple[str, ...] = tuple(dict.fromkeys(problems))
        super().__init__("\n".join(f"Invalid configuration: {problem}" for problem in self.problems))


@functools.cache
def _config_schema() -> dict[str, Any]:
    return yaml.safe_load(CONFIG_SCHEMA.read_text())


def schema_problems(config: Mapping[str, Any]) -> list[str]:
    """Every way ``config`` breaks the JSON Schema, one ``<key path>: <problem>`` line each (a misspelt key
    with the key it is closest to), in key order."""
    import jsonschema

    schema = _config_schema()
    errors = jsonschema.Draft202012Validator(schema).iter_errors(config)
    problems = []
    for error in sorted(errors, key=lambda error: [str(part) for part in error.absolute_path]):
        problems.extend(_describe_schema_error(error, schema))
    return problems


def _describe_schema_error(error: Any, schema: Mapping[str, Any]) -> list[str]:
    where = _key_path(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = list(error.schema.get("properties", {}))
        return [
            f"{_key_path([*error.absolute_path, key])}: unknown key{_did_you_mean(str(key), known, schema)}"
            for key in instance
            if key not in known
        ]
    if error.validator == "required" and isinstance(instance, Mapping):
        return [
            f"{_key_path([*error.absolute_path, key])}: missing (required)"
            for key in error.validator_value
            if key not in instance
        ]
    return [f"{where or '(top level)'}: {error.message}"]


def _key_path(parts: Iterable[Any]) -> str:
    """``["optuna", "enqueue", 0, "lr"]`` -> ``optuna.enqueue[0].lr``."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _did_you_mean(key: str, known: Sequence[str], schema: Mapping[str, Any]) -> str:
    """`` (did you mean n_trials?)`` for a misspelling, the full path for a key in the wrong place, else the
    keys allowed there."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    elsewhere = sorted(path for path in _schema_key_paths(schema) if path.rsplit(".", 1)[-1] == key)
    if elsewhere:
        return f" (did you mean {' or '.join(elsewhere)}?)"
    return f" (known keys here: {', '.join(known)})" if known else ""


def _schema_key_paths(schema: Mapping[str, Any]) -> list[str]:
    """Every key path the schema defines, a mapping's free keys written ``<name>`` (``tasks.<name>.train_size``)."""
    definitions = schema.get("definitions", {})

    def resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def walk(node: Mapping[str, Any], prefix: str, depth: int) -> Iterable[str]:
        node = resolve(node)
        if depth > 4:
            return
        for name, child in node.get("properties", {}).items():
            yield f"{prefix}{name}"
            yield from walk(child, f"{prefix}{name}.", depth + 1)
        if isinstance(node.get("additionalProperties"), Mapping):
            yield from walk(node["additionalProperties"], f"{prefix}<name>.", depth + 1)

    return list(walk(schema, "", 0))


def validate_schema(config: dict[str, Any]) -> None:
    """Validate against the JSON Schema and fill in its defaults, in place (Snakemake's validator).

    Raises:
        ConfigError: one line per problem.
    """
    problems = schema_problems(config)
    if problems:
        raise ConfigError(*problems)
    from snakemake.utils import validate

    validate(config, str(CONFIG_SCHEMA), set_default=True)


def describe_invalid_config(config: Mapping[str, Any], error: Exception) -> str:
    """The message for a config that Snakemake's ``validate`` refused: one line per problem (its own message
    names the first problem only, above a dump of the schema)."""
    return str(ConfigError(*(schema_problems(config) or [_first_line(error)])))


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:3])
