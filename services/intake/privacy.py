"""Citizen phone numbers: validated, stored masked plus a keyed hash, never kept in full.

The hash (HMAC-SHA256 with a secret key) lets an auditor find all tickets of one number
without anyone being able to read the number back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

_SEPARATORS = re.compile(r"[\s\-()（）]")
_COUNTRY_PREFIX = re.compile(r"^(\+86|0086)")


class InvalidPhone(ValueError):
    """Not something a citizen could be called back on."""


def normalize_phone(raw: str) -> str:
    """Digits only, without the +86 country code; 7 to 15 digits."""
    phone = _COUNTRY_PREFIX.sub("", _SEPARATORS.sub("", raw.strip()))
    if not phone.isascii() or not phone.isdigit() or not 7 <= len(phone) <= 15:
        raise InvalidPhone("citizen_phone must be 7 to 15 digits, optionally with +86")
    return phone


def mask_phone(phone: str) -> str:
    """`138****5678` for mobiles; every digit but the last four hidden otherwise."""
    if len(phone) == 11 and phone.startswith("1"):
        return f"{phone[:3]}****{phone[-4:]}"
    return "*" * (len(phone) - 4) + phone[-4:]


class PhoneHasher:
    """Keyed hash of normalized numbers, so equal numbers match and none can be read back."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the phone hash key must be at least 16 bytes")
        self._key = key

    def hash(self, phone: str) -> str:
        """Hex HMAC-SHA256 of the normalized number."""
        return hmac.new(self._key, phone.encode(), hashlib.sha256).hexdigest()


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
