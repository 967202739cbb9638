"""Accuracy regression gate: a 500-per-type sample of the Faker PII set.

The full 5,000-per-type run is bench/bench_masking.py; this keeps CI honest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from bench_masking import evaluate, metrics  # noqa: E402
from pii_dataset import generate  # noqa: E402

REQUIRED = (
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "US_SSN",
    "IBAN_CODE",
    "AWS_ACCESS_KEY",
    "PRIVATE_KEY",
    "JWT",
    "GITHUB_TOKEN",
    "SLACK_TOKEN",
    "STRIPE_KEY",
    "PASSWORD_PAIR",
)


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[float, float]]:
    return metrics(evaluate(generate(per_type=500, seed=20261126)))


@pytest.mark.parametrize("entity", REQUIRED)
def test_recall_and_precision_targets(results, entity: str) -> None:
    precision, recall = results[entity]
    assert recall >= 0.99, f"{entity} recall {recall:.4f}"
    assert precision >= 0.98, f"{entity} precision {precision:.4f}"


def test_ip_precision(results) -> None:
    precision, recall = results["IP_ADDRESS"]
    assert precision >= 0.98 and recall >= 0.99
