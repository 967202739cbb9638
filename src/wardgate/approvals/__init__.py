"""Just-in-time approvals: the broker that holds review-verdict statements, its shared
SQLite state, webhook notifications and human durations. See docs/approvals.md."""

from wardgate.approvals.broker import DEFAULT_TTL_SECONDS, ApprovalBroker
from wardgate.approvals.durations import format_duration, parse_duration
from wardgate.approvals.model import (
    Approval,
    ApprovalError,
    ApprovalForbidden,
    ApprovalInvalid,
    ApprovalNotFound,
    ApprovalNotPending,
    Grant,
    Outcome,
    ReviewerDirectory,
    StaticReviewers,
    Status,
)

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "ApprovalBroker",
    "Approval",
    "ApprovalError",
    "ApprovalForbidden",
    "ApprovalInvalid",
    "ApprovalNotFound",
    "ApprovalNotPending",
    "Grant",
    "Outcome",
    "ReviewerDirectory",
    "StaticReviewers",
    "Status",
    "format_duration",
    "parse_duration",
]
