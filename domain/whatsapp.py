"""A WhatsApp template message: business-initiated WhatsApp carries only a template approved in the sender's
WhatsApp Business Account, named with its language, its body parameters filled per recipient."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from domain.template import render

# Meta: template names are lower-case letters, digits and underscores (≤ 512); languages are codes such as
# `ru`, `en_US`, `pt_BR`; a template's body takes its parameters in order ({{1}}, {{2}}, …).
TEMPLATE_NAME_MAX = 512
TEMPLATE_PARAMETERS_MAX = 100
TEMPLATE_PARAMETER_MAX = 1024


class WhatsAppTemplate(BaseModel):
    """`template = { name = "order_update", language = "ru", parameters = ["{name}", "{code}"] }`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=TEMPLATE_NAME_MAX, pattern=r"^[a-z0-9_]+$")
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    parameters: list[str] = Field(default=[], max_length=TEMPLATE_PARAMETERS_MAX)

    def rendered(self, variables: Mapping[str, str]) -> WhatsAppTemplate:
        """The template with each parameter filled from the recipient's variables (MissingVariableError for a
        variable the recipient lacks and the parameter gives no default for)."""
        return self.model_copy(update={"parameters": [render(p, variables) for p in self.parameters]})
