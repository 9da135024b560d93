"""Who is calling, through which gate, from where: what a module function sees as ``ctx``."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Optional

from apiserver.module import Role


class Gate(str, enum.Enum):
    """Authentication gates of ApisCP.  SOAP covers both SOAP and XML-RPC requests."""

    UI = "UI"
    SOAP = "SOAP"
    DAV = "DAV"
    CLI = "CLI"

    @classmethod
    def parse(cls, value: Optional[str]) -> Optional["Gate"]:
        """``None``/empty -> None, otherwise the gate (case-insensitive); ValueError if unknown."""
        if value is None or value == "":
            return None
        try:
            return cls(str(value).upper())
        except ValueError:
            raise ValueError(f"unknown gate {value!r}: expected one of UI, SOAP, DAV, CLI") from None


@dataclasses.dataclass(frozen=True)
class Identity:
    """An authenticated account acting in one role.

    ``user_id`` is the account's row id; ``site_id``/``site`` are None for the appliance
    administrator.  ``impersonator`` is the identity that hijacked into this one, if any.
    """

    role: Role
    user_id: int
    username: str
    site_id: Optional[int] = None
    site: Optional[str] = None
    impersonator: Optional["Identity"] = None

    def describe(self) -> str:
        """``admin``, ``site admin@example.com``, ``user bob@example.com`` for logs."""
        if self.role is Role.ADMIN:
            return f"appliance {self.username}"
        return f"{self.role.label} {self.username}@{self.site}"


@dataclasses.dataclass
class CallContext:
    """One call, as a module function sees it: ``api``, the :class:`apiserver.plugin_api.PluginApi`
    (what a module function may use of the server), the caller's ``identity``, the ``gate`` and
    ``client_address`` it came through, and the ``session_id`` when a session (not a key) proved
    who it is."""

    api: Any
    identity: Identity
    gate: Gate
    client_address: str
    session_id: Optional[str] = None

    def __getattr__(self, name: str):
        if name == "app":  # what module functions of earlier versions reached for
            raise AttributeError("CallContext has no 'app': a module function uses ctx.api, the plugin API")
        raise AttributeError(f"'CallContext' object has no attribute {name!r}")


@dataclasses.dataclass
class Credentials:
    """What a request offered to prove who it is.  One kind is used: a single-sign-on id, else a
    live session when both a key and a session are offered (ApisCP's precedence), else the key,
    the session, a password, the peer uid.  Authentication clears the key or session it did not
    use, so what is left says which one decided."""

    api_key: Optional[str] = None       # ?authkey=, raw as sent (dashes/spaces allowed)
    session_id: Optional[str] = None    # esprit_id cookie
    username: Optional[str] = None      # password login (UI, DAV)
    site: Optional[str] = None
    password: Optional[str] = None
    peer_uid: Optional[int] = None      # CLI socket peer's uid
    sso_session_id: Optional[str] = None  # /apps/<app>?esprit_id=: an admin_hijack(..., 'UI') session, used once

    @property
    def offered(self) -> bool:
        return any(v is not None for v in (self.api_key, self.session_id, self.password, self.peer_uid,
                                           self.sso_session_id))


@dataclasses.dataclass
class AuthRequest:
    """One authentication attempt at a gate: what the middleware chain works on."""

    gate: Gate
    address: str                 # client address, already resolved through trusted proxies
    credentials: Credentials
    secure: bool = False         # arrived over TLS or the local socket
    user_agent: Optional[str] = None  # the client's User-Agent header, to tell devices apart
