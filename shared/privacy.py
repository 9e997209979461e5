"""Citizen phone numbers: validated, stored masked plus a keyed hash, never kept in full.

Numbers are read by `phonenumbers` (Google's libphonenumber metadata), a national number as
China's, and hashed in E.164 (`+861012345678`), so `010-12345678`, `(010)12345678` and
`+86 10 1234 5678` are one citizen. The hash (HMAC-SHA256 with a secret key) lets an auditor
find all tickets of one number without anyone being able to read the number back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat

REGION = "CN"
"""How a number without a country code is read."""

MOBILE_LENGTH = 11


class InvalidPhone(ValueError):
    """Not something a citizen could be called back on."""


def normalize_phone(raw: str) -> str:
    """The number in E.164 (`+861012345678`); InvalidPhone unless it is a valid number."""
    return phonenumbers.format_number(_parse(raw), PhoneNumberFormat.E164)


def mask_phone(phone: str) -> str:
    """From the national significant number: `138****5678` for mobiles (11 digits starting
    with 1), every digit but the last four as `*` otherwise (`******5678` for 010-12345678)."""
    return _masked(_parse(phone))


def _masked(number: PhoneNumber) -> str:
    digits = phonenumbers.national_significant_number(number)
    if len(digits) == MOBILE_LENGTH and digits.startswith("1"):
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * (len(digits) - 4) + digits[-4:]


def redact_phone(raw: str) -> str:
    """What an error may echo of a refused number: every digit but the last four as `*`
    (`+** ***-****-5678`), so no more than four digits of it are ever shown back."""
    keep = 4
    chars = list(raw)
    for index in reversed(range(len(chars))):
        if chars[index].isdigit():
            if keep:
                keep -= 1
            else:
                chars[index] = "*"
    return "".join(chars)


def _parse(raw: str) -> PhoneNumber:
    # The messages never hold the number: they end up in a 422 and may reach a log.
    try:
        number = phonenumbers.parse(raw, REGION)
    except NumberParseException:
        raise InvalidPhone("citizen_phone is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(
            "citizen_phone is not a valid number: a Chinese one (area code and number, or an "
            "11-digit mobile), or another country's with its + code"
        )
    return number


class PhoneHasher:
    """Keyed hash of numbers in E.164, so every way of writing one number gives one hash
    and none can be read back."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the phone hash key must be at least 16 bytes")
        self._key = key

    def hash(self, phone: str) -> str:
        """Hex HMAC-SHA256 of the number in E.164 (InvalidPhone if it is not valid)."""
        return self._digest(normalize_phone(phone))

    def masked_and_hashed(self, phone: str) -> tuple[str, str]:
        """`mask_phone` and `hash` of one number, parsed once (InvalidPhone if not valid)."""
        number = _parse(phone)
        return _masked(number), self._digest(
            phonenumbers.format_number(number, PhoneNumberFormat.E164)
        )

    def _digest(self, e164: str) -> str:
        return hmac.new(self._key, e164.encode(), hashlib.sha256).hexdigest()


def load_or_create_key(configured: str, key_file: Path) -> bytes:
    """The configured key, else the one kept in `key_file`, made once (0600) if missing."""
    if configured:
        return configured.encode()
    if key_file.exists():
        return key_file.read_bytes().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    draft = key_file.with_name(f".{key_file.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        os.link(draft, key_file)  # atomic: two replicas starting at once agree on one key
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return key_file.read_bytes().strip()
