"""YAML loading with ``include:``, dotted overrides and error messages naming file, key, value."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names file, key and value."""


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: include cycle through {[str(p) for p in seen]}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        merged = _deep_merge(merged, read_yaml(path.parent / inc, (*seen, path)))
    return _deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key component")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after",))
        value = err.get("input")
        shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (value {shown})")
        else:
            lines.append(f"  {loc or '<top>'}: {err['msg']} (got {shown})")
    return "\n".join(lines)


def validate_model(model: type[BaseModel], data: dict, source: str = "<config>"):
    """Validate a raw mapping into ``model``, raising :class:`ConfigError` on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_model(
    model: type[BaseModel],
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
):
    """Load ``path`` (following ``include:``), apply overrides, validate into ``model``.

    ``path=None`` gives the model's defaults plus overrides.
    """
    source = str(path) if path is not None else "<defaults>"
    data = read_yaml(Path(path)) if path is not None else {}
    data = apply_overrides(data, overrides)
    if overrides:
        source += " + overrides " + " ".join(overrides)
    return validate_model(model, data, source)


def config_hash(cfg: BaseModel) -> str:
    """Stable short hash of a validated config (hex, 16 chars)."""
    return json_hash(cfg.model_dump(mode="json"))


def json_hash(data: dict) -> str:
    """:func:`config_hash` of a config already in JSON form, as stored: a record checks
    its own config with it (re-validating would add the fields that later versions gave
    defaults, and every older dataset would fail its check)."""
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
