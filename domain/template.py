"""Message personalisation: `{name}` by column header, `{1}` by position, `{name|default}`."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{([^{}|]+?)(?:\|([^{}]*))?\}")


class MissingVariableError(ValueError):
    """A recipient has no value for a variable the text uses (and the text gives no default)."""

    def __init__(self, variable: str) -> None:
        super().__init__(f"no value for variable {{{variable}}}")
        self.variable = variable


def variables_used(text: str) -> dict[str, str | None]:
    """Variables in `text` mapped to their default (None when the text gives none)."""
    return {m.group(1).strip(): m.group(2) for m in _PLACEHOLDER.finditer(text)}


def render(text: str, variables: Mapping[str, str]) -> str:
    """Fill every placeholder; raise MissingVariableError when a value is empty and has no default."""

    def fill(match: re.Match[str]) -> str:
        name, default = match.group(1).strip(), match.group(2)
        value = variables.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        raise MissingVariableError(name)

    return _PLACEHOLDER.sub(fill, text)
