"""API key tokens: `hotline_<key id>_<secret>`.

The prefix says what the string is (secret scanners and people both recognise it); the key
id is not secret (it names the key in events, logs and listings); the secret is 32 random
bytes. Only the SHA-256 of the whole token is stored: with that much entropy a slow hash
adds nothing, and a leaked table reveals no usable key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "hotline_"
_TOKEN = re.compile(r"hotline_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Token:
    """A parsed token."""

    key_id: str
    value: str

    @property
    def secret_hash(self) -> str:
        """What is stored and compared."""
        return hash_token(self.value)


def new_token() -> Token:
    """A fresh key: a random id and a random secret."""
    key_id = secrets.token_hex(8)
    value = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return Token(key_id, value)


def parse_token(value: str) -> Token | None:
    """The token in `value`, or None if it is not one of ours."""
    match = _TOKEN.fullmatch(value)
    return Token(match["key_id"], value) if match else None


def hash_token(value: str) -> str:
    """Hex SHA-256 of the whole token."""
    return hashlib.sha256(value.encode()).hexdigest()
