"""MaskingEngine: configuration, directive resolution, free-text masking."""

from __future__ import annotations

import pydantic
import pytest

from wardgate.masking import (
    BASELINE_ENTITIES,
    BASELINE_MASK,
    ColumnInfo,
    MaskingConfig,
    MaskingEngine,
    MaskingError,
)
from wardgate.pipeline.command import MaskDirective

ENGINE = MaskingEngine(MaskingConfig(), token_key=b"k")
SSN_RULE = MaskDirective("pii/ssn", columns=("*.ssn",))


def test_baseline_mask_covers_the_required_entities() -> None:
    assert BASELINE_MASK.rule == "baseline/mask-pii"
    for entity in ("CREDIT_CARD", "EMAIL_ADDRESS", "US_SSN", "IBAN_CODE", "JWT", "PASSWORD_PAIR"):
        assert entity in BASELINE_ENTITIES
    assert "PHONE_NUMBER" not in BASELINE_ENTITIES


def test_mask_text_on_a_postgres_error() -> None:
    text, counts = ENGINE.mask_text("Key (email)=(x@y.com) already exists.", [BASELINE_MASK])
    assert text == "Key (email)=([EMAIL]) already exists."
    assert counts == {"EMAIL_ADDRESS": 1}


def test_mask_text_masks_column_rule_echoes() -> None:
    d = [BASELINE_MASK, SSN_RULE]
    text, counts = ENGINE.mask_text("Key (ssn)=(123456789) already exists.", d)
    assert text == "Key (ssn)=([REDACTED]) already exists."
    text, _ = ENGINE.mask_text("Key (id, ssn)=(7, 123456789) already exists.", d)
    assert text == "Key (id, ssn)=(7, [REDACTED]) already exists."
    text, _ = ENGINE.mask_text(
        "Failing row contains (7, 123456789, null).", [BASELINE_MASK, SSN_RULE]
    )
    assert text == "Failing row contains ([REDACTED])."
    # no rule on that column: untouched
    text, _ = ENGINE.mask_text("Key (id)=(7) already exists.", d)
    assert text == "Key (id)=(7) already exists."


def test_mask_text_statement_literals_of_covered_columns() -> None:
    sql = "INSERT INTO customers (name, ssn) VALUES ('Bob', '123456789')"
    text, counts = ENGINE.mask_text(sql, [BASELINE_MASK, SSN_RULE])
    assert "123456789" not in text and "'[REDACTED]'" in text
    other = "INSERT INTO t (name) VALUES ('Bob', 'a@b.com')"
    assert ENGINE.mask_text(other, [BASELINE_MASK, SSN_RULE])[0] == (
        "INSERT INTO t (name) VALUES ('Bob', '[EMAIL]')"
    )


def test_mask_text_keeps_non_ascii_and_handles_secrets() -> None:
    text, counts = ENGINE.mask_text(
        "NOTICE: café password=hunter2 für AKIAIOSFODNN7EXAMPLE", [BASELINE_MASK]
    )
    assert text == "NOTICE: café password=[PASSWORD] für [AWS_ACCESS_KEY]"
    assert counts == {"PASSWORD_PAIR": 1, "AWS_ACCESS_KEY": 1}
    assert ENGINE.mask_text("x@y.com", []) == ("x@y.com", {})


def test_mask_parameters() -> None:
    params, counts = ENGINE.mask_parameters(
        ["a@b.com", None, "42"], [BASELINE_MASK], "INSERT INTO t VALUES ($1, $2, $3)"
    )
    assert params == ("[EMAIL]", None, "42") and counts == {"EMAIL_ADDRESS": 1}
    params, counts = ENGINE.mask_parameters(
        ["123456789", None],
        [BASELINE_MASK, SSN_RULE],
        "UPDATE customers SET ssn = $1 WHERE id = $2",
    )
    assert params == ("[REDACTED]", None) and counts == {"COLUMN_RULE": 1}


def test_unknown_entity_strategy_and_missing_key_fail_closed() -> None:
    cols = [ColumnInfo("x", None, 25, 0)]
    with pytest.raises(MaskingError):
        ENGINE.plan([MaskDirective("p/r", entities=("NOPE",))], cols)
    with pytest.raises(MaskingError):
        ENGINE.plan([MaskDirective("p/r", entities=("US_SSN",), strategy="scramble")], cols)
    keyless = MaskingEngine(MaskingConfig())
    with pytest.raises(MaskingError):
        keyless.plan([MaskDirective("p/r", entities=("US_SSN",), strategy="token")], cols)


def test_star_expands_to_enabled_entities_and_phone_is_opt_in() -> None:
    cols = [ColumnInfo("x", None, 25, 0)]
    star = [MaskDirective("p/all", entities=("*",))]
    phone = b"call (555) 123-4567"
    assert ENGINE.plan(star, cols).mask_values([phone]) == [phone]
    with_phone = MaskingEngine(MaskingConfig(phone=True))
    assert with_phone.plan(star, cols).mask_values([phone]) == [b"call [PHONE]"]
    named = [MaskDirective("p/phone", entities=("PHONE_NUMBER",))]
    assert ENGINE.plan(named, cols).mask_values([phone]) == [b"call [PHONE]"]


def test_directive_without_entities_or_columns_means_baseline() -> None:
    cols = [ColumnInfo("x", None, 25, 0)]
    m = ENGINE.plan([MaskDirective("p/r")], cols)
    assert m.mask_values([b"a@b.com"]) == [b"[EMAIL]"]


def test_config_validation() -> None:
    with pytest.raises(pydantic.ValidationError):
        MaskingConfig(custom=[{"name": "lower", "regex": "x"}])
    with pytest.raises(pydantic.ValidationError):
        MaskingConfig(custom=[{"name": "EMAIL_ADDRESS", "regex": "x"}])
    with pytest.raises(pydantic.ValidationError):
        MaskingConfig(default_strategy={"CREDIT_CARD": "scramble"})
    with pytest.raises(pydantic.ValidationError):
        MaskingConfig(unknown_key=1)
    cfg = MaskingConfig.model_validate(
        {"token_key": "env:WARDGATE_TOKEN_KEY", "custom": [{"name": "PROJECT", "words": ["x"]}]}
    )
    assert cfg.custom[0].words == ["x"]
