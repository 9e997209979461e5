"""Citizen phone numbers: one citizen, one E.164 number, one keyed hash; shown only masked."""

import os
import stat

import pytest
from pydantic import ValidationError

from services.intake.models import TicketCreate
from shared.privacy import (
    InvalidPhone,
    PhoneHasher,
    load_or_create_key,
    mask_phone,
    normalize_phone,
    redact_phone,
)

HASHER = PhoneHasher(b"k" * 32)

LANDLINE = ["010-12345678", "+86 10 1234 5678", "(010)12345678", "0086 10 12345678"]
MOBILE = ["13812345678", "+86 138 1234 5678", "138-1234-5678", "+86 138-1234-5678"]


@pytest.mark.parametrize(
    ("forms", "e164"), [(LANDLINE, "+861012345678"), (MOBILE, "+8613812345678")]
)
def test_every_way_of_writing_one_number_gives_one_e164_and_one_hash(forms, e164):
    assert {normalize_phone(form) for form in forms} == {e164}
    assert len({HASHER.hash(form) for form in forms}) == 1
    assert HASHER.hash(forms[0]) == HASHER.hash(e164)


def test_different_numbers_or_keys_hash_differently():
    assert HASHER.hash("010-12345678") != HASHER.hash("13812345678")
    assert HASHER.hash("13812345678") != PhoneHasher(b"j" * 32).hash("13812345678")
    assert len(HASHER.hash("13812345678")) == 64
    with pytest.raises(ValueError, match="16 bytes"):
        PhoneHasher(b"short")


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138 1234 5678", "138****5678"),
        ("+8613812345678", "138****5678"),
        ("010-12345678", "******5678"),
        ("+861012345678", "******5678"),
        ("0086 10 12345678", "******5678"),
        ("0411-8765 4321", "*******4321"),
        ("+1 650 253 0000", "******0000"),
    ],
)
def test_masks_keep_the_last_four_digits_and_a_mobile_s_first_three(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    "raw", ["12345", "+86 999", "call me", "abc-defg-hijk", "12345678", "138123456789", "", "+"]
)
def test_invalid_numbers_are_refused_without_echoing_them(raw):
    with pytest.raises(InvalidPhone) as caught:
        normalize_phone(raw)
    assert not raw.strip() or raw not in str(caught.value)
    with pytest.raises(InvalidPhone):
        HASHER.hash(raw)


def test_a_ticket_with_an_invalid_number_is_a_validation_error_on_citizen_phone():
    body = {
        "city": "沈阳",
        "channel": "online",
        "scenario": "社保查询",
        "category": "help",
        "content": "医保卡丢了怎么补办？",
        "call": {"answered": True, "resolved_at_first_contact": False},
    }
    assert TicketCreate.model_validate(body | {"citizen_phone": "(010)12345678"}).citizen_phone == (
        "+861012345678"
    )
    with pytest.raises(ValidationError) as caught:
        TicketCreate.model_validate(body | {"citizen_phone": "+86 999"})
    [error] = caught.value.errors()
    assert error["loc"] == ("citizen_phone",)
    assert error["type"] == "value_error"


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        ("+86 138-1234-5678", "+** ***-****-5678"),
        ("138123456789", "********6789"),
        ("call me", "call me"),
        ("12", "12"),
    ],
)
def test_a_refused_number_is_echoed_with_only_its_last_four_digits(raw, redacted):
    assert redact_phone(raw) == redacted


def test_the_hash_key_is_the_configured_one_or_made_once_and_kept(tmp_path):
    key_file = tmp_path / "keys" / "phone-hash.key"
    assert load_or_create_key("configured-key-of-16+", key_file) == b"configured-key-of-16+"
    assert not key_file.exists()
    made = load_or_create_key("", key_file)
    assert len(made) == 64
    assert load_or_create_key("", key_file) == made
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
