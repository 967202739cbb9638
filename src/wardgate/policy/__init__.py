"""SQL-aware policy: classify statements from the parser's tree and decide allow/deny/review/mask."""

from wardgate.policy.engine import PolicyConfigError, PolicyEngine, PolicySession
from wardgate.policy.model import MaskSpec, PolicySpec, ReviewSpec, RuleSpec
from wardgate.policy.settings import wardgate_setting

__all__ = [
    "PolicyConfigError",
    "PolicyEngine",
    "PolicySession",
    "PolicySpec",
    "RuleSpec",
    "ReviewSpec",
    "MaskSpec",
    "wardgate_setting",
]
