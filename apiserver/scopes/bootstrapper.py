"""The Bootstrapper variables: typed settings of the appliance's services, kept across restarts.

``state_dir/bootstrapper.json`` (0600, replaced atomically) holds the values that were set;
the others have their defaults.  The ``cp.bootstrapper``, ``apache.insecure-ssl``,
``mail.insecure-ssl`` and ``apache.dav`` scopes read and write them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from apiserver.errors import ServerError
from apiserver.files import atomic_write
from apiserver.types import BOOLEAN, TypeSpec

BOOL = TypeSpec(BOOLEAN)


@dataclasses.dataclass(frozen=True)
class BootstrapperVar:
    """One typed Bootstrapper setting."""

    name: str
    spec: TypeSpec
    default: Any
    help: str


BOOTSTRAPPER_VARS = (
    BootstrapperVar("postfix_insecure_ssl", BOOL, False, "Enable TLSv1.0/v1.1 for SMTP/submission (25, 587)."),
    BootstrapperVar("dovecot_insecure_ssl", BOOL, False, "Enable TLSv1.0/v1.1 for IMAP/POP3 (143, 110)."),
    BootstrapperVar("haproxy_insecure_ssl", BOOL, False,
                    "Enable TLSv1.0/v1.1 for SNI client termination (465, 993, 995)."),
    BootstrapperVar("apache_insecure_ssl", BOOL, False, "Enable TLSv1.0/v1.1 in Apache."),
    BootstrapperVar("apache_dav_enabled", BOOL, False, "WebDAV support in Apache."),
    BootstrapperVar("has_low_memory", BOOL, False, "Low-memory mode: PHP runs as an ISAPI module under open_basedir."),
)
MAIL_INSECURE_SSL_VARS = ("postfix_insecure_ssl", "dovecot_insecure_ssl", "haproxy_insecure_ssl")
BOOTSTRAPPER_FILE = "bootstrapper.json"
#: The variables by name.
VARIABLES = {var.name: var for var in BOOTSTRAPPER_VARS}


class Bootstrapper:
    """The variables of ``state_dir/bootstrapper.json`` (``state_dir``: the config's).  Every method blocks."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, BOOTSTRAPPER_FILE)

    def load(self) -> dict:
        """Every variable's value: the stored ones over the defaults."""
        values = {var.name: var.default for var in BOOTSTRAPPER_VARS}
        try:
            with open(self.path, encoding="utf-8") as fh:
                stored = json.load(fh)
        except FileNotFoundError:
            return values
        except (OSError, ValueError) as exc:
            raise ServerError(f"cannot read the Bootstrapper variables in {self.path}: {exc}") from None
        values.update({k: v for k, v in stored.items() if k in values})
        return values

    def save(self, changes: dict) -> None:
        """Store ``changes`` (already validated) on top of the current values, atomically."""
        values = self.load()
        values.update(changes)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        atomic_write(self.path, json.dumps(values, indent=2, sort_keys=True) + "\n", mode=0o600)

