"""A keys file: API key tokens a deployment is given (a docker secret, the embedded stack's
`<data dir>/api-keys.toml`), imported into the key store and read by clients such as the
simulator. It holds secrets: written with mode 0600, and never logged.

    [[keys]]
    name = "embedded operator"
    role = "operator"
    token = "hotline_0123456789abcdef_..."

    [[keys]]
    name = "embedded 人社 desk"
    role = "department"
    department = "人社"
    token = "hotline_..."
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.auth.store import KeyStore, check_spec
from shared.auth.tokens import new_token, parse_token
from shared.errors import DomainError
from shared.names import ROLES, Role

KEYS_FILE_NAME = "api-keys.toml"
"""The embedded stack's keys file, in its data folder."""


class KeysFileError(ValueError):
    """A keys file that cannot be used, with the file and the entry named."""


@dataclass(frozen=True)
class KeyEntry:
    """One key of a keys file."""

    name: str
    role: Role
    token: str
    department: str | None = None


def generate_entries(departments: Iterable[str], *, label: str) -> list[KeyEntry]:
    """A new key for every role but `department`, and one per department."""
    entries = [
        KeyEntry(f"{label} {role}", role, new_token().value)
        for role in ROLES
        if role != "department"
    ]
    entries += [
        KeyEntry(f"{label} {department} desk", "department", new_token().value, department)
        for department in departments
    ]
    return entries


def write_keys_file(path: Path, entries: Sequence[KeyEntry]) -> None:
    """Write the entries, readable by the owner only (created so, then renamed into place)."""
    lines = ["# API keys (secrets). Keep this file private; see README 'Security'.", ""]
    for entry in entries:
        lines.append("[[keys]]")
        lines.append(f"name = {json.dumps(entry.name, ensure_ascii=False)}")
        lines.append(f'role = "{entry.role}"')
        if entry.department is not None:
            lines.append(f"department = {json.dumps(entry.department, ensure_ascii=False)}")
        lines.append(f'token = "{entry.token}"')
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    draft.replace(path)


def read_keys_file(path: Path) -> list[KeyEntry]:
    """The entries of a keys file; KeysFileError naming the file and the entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeysFileError(f"{path}: {exc}") from exc
    raw = data.get("keys")
    if not isinstance(raw, list) or not raw:
        raise KeysFileError(f"{path}: no [[keys]] entries")
    entries = []
    for number, item in enumerate(raw, start=1):
        where = f"{path}: key {number}"
        if not isinstance(item, dict):
            raise KeysFileError(f"{where}: not a table")
        name, role, token = item.get("name"), item.get("role"), item.get("token")
        department = item.get("department")
        if not isinstance(name, str) or not name.strip():
            raise KeysFileError(f"{where}: name missing")
        if not isinstance(token, str) or parse_token(token) is None:
            raise KeysFileError(f"{where}: token is not a hotline API key")
        if department is not None and not isinstance(department, str):
            raise KeysFileError(f"{where}: department must be text")
        try:
            checked = check_spec(str(role), department, name.strip())
        except DomainError as exc:
            raise KeysFileError(f"{where}: {exc.message}") from exc
        entries.append(KeyEntry(name.strip(), checked, token, department))
    return entries


async def import_entries(store: KeyStore, entries: Iterable[KeyEntry]) -> list[KeyEntry]:
    """Store the keys not stored yet; returns those added. A key already stored is left as
    it is (a revoked one stays revoked); a stored key id with another secret is an error."""
    added = []
    for entry in entries:
        token = parse_token(entry.token)
        if token is None:  # read_keys_file and generate_entries only make valid ones
            raise KeysFileError(f"{entry.name}: token is not a hotline API key")
        stored = await store.stored_hash(token.key_id)
        if stored is None:
            await store.add(token, name=entry.name, role=entry.role, department=entry.department)
            added.append(entry)
        elif stored != token.secret_hash:
            raise KeysFileError(f"{entry.name}: key {token.key_id} is stored with another secret")
    return added


class KeyRing:
    """A client's keys, by role (and department): which key to send for each step."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self._by_role: dict[str, str] = {}
        self._by_department: dict[str, str] = {}
        for entry in entries:
            if entry.role == "department" and entry.department is not None:
                self._by_department.setdefault(entry.department, entry.token)
            else:
                self._by_role.setdefault(entry.role, entry.token)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        """The keys of a keys file."""
        return cls(read_keys_file(path))

    def token(self, role: Role, department: str | None = None) -> str:
        """The key for `role` (a department's key for `department`); KeyError naming what
        is missing."""
        if role == "department":
            if department is None or department not in self._by_department:
                raise KeyError(f"no key for department {department!r}")
            return self._by_department[department]
        if role not in self._by_role:
            raise KeyError(f"no key for role {role!r}")
        return self._by_role[role]

    @property
    def departments(self) -> frozenset[str]:
        """The departments this ring has a key for."""
        return frozenset(self._by_department)
