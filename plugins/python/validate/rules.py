"""The validation rules, apart from the plugin glue (no `wit_world` import here), so that
they run under a plain `python3` too:

    python3 -c 'import rules; print(rules.check(rules.Rules({...}), b"{}"))'

A rule set is the `config` table of the plugin's use, as JSON:

    {
      "methods": ["POST", "PUT", "PATCH"],     # which requests are checked
      "allow_unknown": true,                   # false: fields not listed are refused
      "fields": {
        "name": {"type": "string", "required": true, "max_length": 40},
        "age":  {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"one_of": ["admin", "member"]},
        "email": {"type": "string", "pattern": "[^@ ]+@[^@ ]+"}
      }
    }
"""

import json
import re

# What each `type` accepts. JSON `true` is a Python `bool`, which is also an `int`:
# booleans are never numbers here.
TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}

FIELD_KEYS = {
    "type",
    "required",
    "min_length",
    "max_length",
    "minimum",
    "maximum",
    "one_of",
    "pattern",
}

TOP_KEYS = {"methods", "allow_unknown", "fields"}

DEFAULT_METHODS = ["POST", "PUT", "PATCH"]


class ConfigError(Exception):
    """The rule set itself is wrong (an operator's mistake, not the client's)."""


class Rules:
    """A rule set, checked once when built."""

    def __init__(self, config):
        if not isinstance(config, dict):
            raise ConfigError("config must be a table")
        unknown = sorted(set(config) - TOP_KEYS)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        methods = config.get("methods", DEFAULT_METHODS)
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ConfigError("methods must be a list of strings")
        self.methods = {m.upper() for m in methods}
        self.allow_unknown = config.get("allow_unknown", True)
        if not isinstance(self.allow_unknown, bool):
            raise ConfigError("allow_unknown must be true or false")
        fields = config.get("fields", {})
        if not isinstance(fields, dict):
            raise ConfigError("fields must be a table of field name to rules")
        self.fields = {name: _field(name, rule) for name, rule in fields.items()}

    def applies_to(self, method):
        return method.upper() in self.methods


def _field(name, rule):
    if not isinstance(rule, dict):
        raise ConfigError(f"fields.{name} must be a table")
    unknown = sorted(set(rule) - FIELD_KEYS)
    if unknown:
        raise ConfigError(f"fields.{name}: unknown rule(s): {', '.join(unknown)}")
    kind = rule.get("type")
    if kind is not None and kind not in TYPES:
        raise ConfigError(
            f"fields.{name}.type: {kind!r} is not one of {', '.join(TYPES)}"
        )
    for key in ("min_length", "max_length"):
        if key in rule and not TYPES["integer"](rule[key]):
            raise ConfigError(f"fields.{name}.{key} must be an integer")
    for key in ("minimum", "maximum"):
        if key in rule and not TYPES["number"](rule[key]):
            raise ConfigError(f"fields.{name}.{key} must be a number")
    if "one_of" in rule and not isinstance(rule["one_of"], list):
        raise ConfigError(f"fields.{name}.one_of must be a list")
    compiled = dict(rule)
    if "pattern" in rule:
        try:
            compiled["pattern"] = re.compile(rule["pattern"])
        except (re.error, TypeError) as e:
            raise ConfigError(f"fields.{name}.pattern: {e}") from None
    return compiled


def check(rules, body):
    """The problems with `body` (bytes) under `rules`, as `{"field", "message"}` dicts;
    empty when the body is fine."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return [{"field": "", "message": "the body is not valid JSON"}]
    if not isinstance(document, dict):
        return [{"field": "", "message": "the body must be a JSON object"}]

    # Missing fields first, then the others in the order the body has them (the order of
    # `fields` is not the route file's: the gateway hands the config over with its keys
    # sorted).
    problems = [
        {"field": name, "message": "is required"}
        for name, rule in rules.fields.items()
        if rule.get("required", False) and name not in document
    ]
    for name, value in document.items():
        rule = rules.fields.get(name)
        if rule is None:
            if not rules.allow_unknown:
                problems.append({"field": name, "message": "is not an allowed field"})
            continue
        problems.extend(
            {"field": name, "message": message} for message in _check_value(value, rule)
        )
    return problems


def _check_value(value, rule):
    kind = rule.get("type")
    if kind is not None and not TYPES[kind](value):
        article = "an" if kind[0] in "aeiou" else "a"
        yield f"must be {article} {kind}"
        return  # the other rules assume the type
    if "one_of" in rule and value not in rule["one_of"]:
        allowed = ", ".join(json.dumps(v) for v in rule["one_of"])
        yield f"must be one of {allowed}"
    if isinstance(value, (str, list)):
        unit = "characters" if isinstance(value, str) else "items"
        if "min_length" in rule and len(value) < rule["min_length"]:
            yield f"must have at least {rule['min_length']} {unit}"
        if "max_length" in rule and len(value) > rule["max_length"]:
            yield f"must have at most {rule['max_length']} {unit}"
    if TYPES["number"](value):
        if "minimum" in rule and value < rule["minimum"]:
            yield f"must be at least {rule['minimum']}"
        if "maximum" in rule and value > rule["maximum"]:
            yield f"must be at most {rule['maximum']}"
    if isinstance(value, str) and "pattern" in rule and not rule["pattern"].fullmatch(value):
        yield f"must match the pattern {rule['pattern'].pattern}"
