"""The state a first start needs (``apiserver init``) and the secret every node shares."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from typing import Optional

import sqlalchemy as sa

from apiserver.accounts.identities import ADMIN_USERNAME
from apiserver.accounts.keys import KeyCipher, insert_key
from apiserver.config import Config
from apiserver.storage import Storage, schema, utcnow

SECRET_FILE = "secret"


class StateError(Exception):
    """The state directory is unusable or inconsistent; the message says what to do."""


@dataclasses.dataclass
class InitResult:
    """What ``initialize_state`` did: ``admin_key`` is set only when it created the administrator."""

    created: bool
    admin_key: Optional[str]
    lines: list


def secret_path(config: Config) -> str:
    """Where ``apiserver init`` writes the secret when ``[auth] secret`` is empty."""
    return config.state_path(SECRET_FILE)


def load_secret(config: Config) -> bytes:
    """``[auth] secret``, else the contents of ``state_dir/secret``; StateError if neither exists."""
    configured = config.get("auth", "secret")
    if configured:
        return configured.encode("utf-8")
    path = secret_path(config)
    try:
        with open(path, "rb") as fh:
            secret = fh.read().strip()
    except FileNotFoundError:
        raise StateError(f"no secret: set [auth] secret or run 'apiserver init' to create {path}") from None
    if not secret:
        raise StateError(f"{path} is empty: restore it from a backup or set [auth] secret")
    return secret


def _write_secret(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")


class _WallClock:
    """``seconds()`` for init, which runs before any reactor exists."""

    seconds = staticmethod(time.time)


def initialize_state(config: Config) -> InitResult:
    """Create what a first start needs; change nothing that exists.

    Makes ``state_dir`` (0700), the secret file (0600, unless ``[auth] secret`` is set), the
    schema, the appliance administrator ``admin`` and its first API key.
    """
    state_dir = config.state_dir
    lines = []
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, mode=0o700)
        lines.append(f"created state directory {state_dir}")
    _ensure_site_owner(config, lines)
    storage = Storage.from_config(config)
    try:
        admin_key = _initialize_database(config, storage, lines)
    except sa.exc.OperationalError as exc:
        raise StateError(f"cannot use the database at {_where(storage)}: {exc.orig}") from None
    finally:
        storage.dispose()
    if not lines:
        return InitResult(False, None, [f"state exists in {state_dir}; nothing changed"])
    return InitResult(True, admin_key, lines)


def _ensure_site_owner(config: Config, lines: list) -> None:
    """As root with ``[web] site_owner`` empty, the sites' files belong to a system user made here."""
    from apiserver.sites.home import ensure_system_user, site_owner_name

    if os.geteuid() == 0 and not config.get("web", "site_owner"):
        name = site_owner_name("")
        if ensure_system_user(name):
            lines.append(f"created system user {name!r} to own the sites' files")


def _initialize_database(config: Config, storage: Storage, lines: list) -> Optional[str]:
    """The secret, schema and administrator; returns the administrator's new key, if it made one."""
    has_admin = storage.version() > 0 and _admin_id(storage) is not None
    if not config.get("auth", "secret") and not os.path.exists(secret_path(config)):
        if has_admin:
            raise StateError(f"{secret_path(config)} is missing but the database has accounts: restore the "
                             "file or set [auth] secret (a new secret would invalidate every API key)")
        _write_secret(secret_path(config))
        lines.append(f"created secret {secret_path(config)}")
    if storage.create_schema():
        lines.append(f"created database schema v{storage.latest_version} at {_where(storage)}")
    if has_admin:
        return None
    cipher = KeyCipher(load_secret(config))
    now = utcnow(_WallClock)
    with storage.write() as conn:  # the account and its key together, or neither
        uid = conn.execute(schema.users.insert().values(
            site_id=None, username=ADMIN_USERNAME, role="admin", password_hash=None, email=None,
            created_at=now)).inserted_primary_key[0]
        admin_key = insert_key(conn, cipher, uid, "created by apiserver init", now)
    lines.append(f"created appliance administrator {ADMIN_USERNAME!r} and its first API key")
    return admin_key


def _admin_id(storage: Storage) -> Optional[int]:
    with storage.read() as conn:
        return conn.execute(sa.select(schema.users.c.id).where(schema.users.c.role == "admin")).scalar()


def _where(storage: Storage) -> str:
    return storage.engine.url.render_as_string(hide_password=True)
