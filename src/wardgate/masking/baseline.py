"""The baseline masking directive: what is masked for every identity.

Theory of operation: the policy engine adds `BASELINE_MASK` to every decision
(and the PostgreSQL engine uses it when the configuration names no mask rule),
so cards, emails, SSNs, IBANs and secrets never leave the gateway unmasked.
Its strategy is `"default"`: each entity gets the strategy the configuration's
`masking.default_strategy` names for it (cards: `partial`, keeping the last four
digits), and `redact` otherwise. When several directives cover one entity the
strongest strategy wins (redact > token > hash > partial), so no other rule can
weaken the baseline's redaction.
"""

from __future__ import annotations

from wardgate.masking.recognizers import SECRET_ENTITIES
from wardgate.pipeline.command import MaskDirective

__all__ = ["BASELINE_ENTITIES", "BASELINE_MASK", "BASELINE_RULE", "DEFAULT_STRATEGY"]

BASELINE_RULE = "baseline/mask-pii"
DEFAULT_STRATEGY = "default"
BASELINE_ENTITIES: tuple[str, ...] = (
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "US_SSN",
    "IBAN_CODE",
    *SECRET_ENTITIES,
)
BASELINE_MASK = MaskDirective(
    rule=BASELINE_RULE, entities=BASELINE_ENTITIES, strategy=DEFAULT_STRATEGY
)
