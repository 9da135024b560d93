"""What a site is made of: its services' parameters (``siteinfo.domain``, ``diskquota.quota`` ...),
how options name them, and what a value may be.

ApisCP describes every site by *service definitions*: ``service,param`` values checked by one
validator each, with ``strict_svc_config`` refusing names it does not know.  :data:`SERVICES`
declares apiserver's set (a subset of ApisCP's, plus ``dav``); :func:`parse_options` reads the
three spellings callers use, :func:`validate` checks and converts one value.  No I/O here.

Spellings of a name: dot form ``siteinfo.domain`` (SOAP callers), ApisCP's comma form
``siteinfo,domain`` (``AddDomain -c``, cpcmd maps) and nested maps ``{siteinfo: {domain: x}}``.
Values arrive typed (SOAP, XML-RPC, cpcmd) or as text (plan files): switches take ``1``/``0``,
``true``/``false`` (the project's one boolean reader); ``null``, ``None`` and the empty string
are null; ``DEFAULT`` means "what the plan (or the config) says".  An unknown service or
parameter, or a bad value, is :class:`~apiserver.errors.InvalidArgument` naming
``service.param``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any, Iterable, Optional

from apiserver.accounts import validation
from apiserver.booleans import parse_boolean
from apiserver.errors import InvalidArgument

SWITCH, INT, NUMBER, TEXT, EMAIL, DOMAIN, USERNAME, PLAN, UNITS, PREFIX, SECRET, CRYPT, ADDRESSES = (
    "switch", "int", "number", "text", "email", "domain", "username", "plan", "units", "prefix", "secret",
    "crypt", "addresses")

#: A value that means "take the plan's (or the config's) default".
DEFAULT = "DEFAULT"
_NULL_WORDS = frozenset({"null", "none", ""})

#: Storage units and their size in bytes (``K``, ``M``... are ApisCP's short spellings).
UNIT_BYTES = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
_UNIT_ALIASES = {"K": "KB", "M": "MB", "G": "GB", "T": "TB"}

_PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,14}_")
_CRYPT = re.compile(r"\$(6\$(rounds=[0-9]+\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}"
                    r"|pbkdf2-sha512\$[0-9]+\$[./A-Za-z0-9]+\$[./A-Za-z0-9]+)")
_TEXT_LIMIT = 1000


@dataclasses.dataclass(frozen=True, eq=False)  # one object per parameter: compared and hashed by identity
class Param:
    """One parameter of a service.

    ``default``: the value of ``.skeleton`` that every plan starts from; ``protected``: a plan
    (even with ``reset``) never changes it (names, passwords, invoices); ``writable``: False for
    values the server derives (``siteinfo.admin``, ``billing.ctime``); ``secret``: set, never read
    back (plain and crypted passwords).
    """

    service: str
    name: str
    kind: str
    default: Any
    help: str
    nullable: bool = True
    low: Optional[float] = None
    high: Optional[float] = None
    protected: bool = False
    writable: bool = True
    secret: bool = False

    @property
    def qualified(self) -> str:
        """``service.param``."""
        return f"{self.service}.{self.name}"


def _p(service: str, name: str, kind: str, default: Any, help: str, **kw) -> Param:
    return Param(service, name, kind, default, help, **kw)


#: service -> (help, its parameters in display order)
SERVICES: dict = {}


def _service(name: str, help: str, *params: Param) -> None:
    SERVICES[name] = (help, {p.name: p for p in params})


_service("siteinfo", "Core account attributes.",
         _p("siteinfo", "enabled", SWITCH, 1, "The site exists (must be 1; suspend with admin_deactivate_site).",
            nullable=False, low=1),
         _p("siteinfo", "domain", DOMAIN, None, "Primary domain of the site (the first argument of admin_add_site).",
            nullable=False, protected=True),
         _p("siteinfo", "admin_user", USERNAME, None, "The site administrator's login name.", nullable=False,
            protected=True),
         _p("siteinfo", "email", EMAIL, None, "Contact address of the site (its administrator's email).",
            protected=True),
         _p("siteinfo", "plan", PLAN, None, "The plan whose values the site takes (setting it applies the plan).",
            protected=True),
         _p("siteinfo", "notes", TEXT, None, "Free text about the site.", protected=True),
         _p("siteinfo", "admin", TEXT, None, "The site's group name (admin<N>).", writable=False, protected=True))
_service("auth", "How the site administrator logs in.",
         _p("auth", "tpasswd", SECRET, None, "Plain-text password of the site administrator (set, never read back).",
            protected=True, secret=True),
         _p("auth", "cpasswd", CRYPT, None, "Crypted password ($6$ SHA512-crypt or $pbkdf2-sha512$; never read back).",
            protected=True, secret=True))
_service("billing", "How the billing system knows the site.",
         _p("billing", "invoice", TEXT, None, "The billing identifier of the site (an account group's parent).",
            protected=True),
         _p("billing", "parent_invoice", TEXT, None, "Groups the site under the site whose invoice this is.",
            protected=True),
         _p("billing", "ctime", INT, None, "When the site was created (Unix seconds).", writable=False, protected=True))
_service("diskquota", "Storage quota of the site's files.",
         _p("diskquota", "enabled", SWITCH, 1, "Enforce the quota.", nullable=False),
         _p("diskquota", "quota", NUMBER, 4000, "Storage quota in units (null: unlimited).", low=0),
         _p("diskquota", "units", UNITS, "MB", "Units of quota: B, KB, MB, GB, TB.", nullable=False),
         _p("diskquota", "fquota", INT, None, "Most files and folders (null: unlimited).", low=0))
_service("bandwidth", "Traffic allowance per period.",
         _p("bandwidth", "enabled", SWITCH, 1, "Count the site's traffic.", nullable=False),
         _p("bandwidth", "threshold", NUMBER, 50, "Traffic per period in units (null: unlimited).", low=0),
         _p("bandwidth", "units", UNITS, "GB", "Units of threshold: B, KB, MB, GB, TB.", nullable=False),
         _p("bandwidth", "rollover", INT, None, "Day of the month a period begins (null: the day the site was made).",
            low=1, high=31))
_service("users", "Users of the site.",
         _p("users", "enabled", SWITCH, 1, "The site may have users besides its administrator.", nullable=False),
         _p("users", "max", INT, 500, "Most users besides the administrator (null: unlimited).", low=0, high=4096))
for _db, _label in (("mysql", "MariaDB/MySQL"), ("pgsql", "PostgreSQL")):
    _service(_db, f"{_label} databases of the site.",
             _p(_db, "enabled", SWITCH, 0, f"The site has a {_label} user and databases.", nullable=False),
             _p(_db, "dbaseadmin", USERNAME, None, f"{_label} user name (null: the site administrator's name).",
                protected=True),
             _p(_db, "dbaseprefix", PREFIX, None, "Prefix of the site's database names; ends with '_'.",
                protected=True),
             _p(_db, "dbasenum", INT, None, "Most databases (null: unlimited).", low=0, high=999),
             _p(_db, "passwd", SECRET, None, f"{_label} password (null: generated; never read back).",
                protected=True, secret=True))
_service("ssh", "Shell access of the site's users.",
         _p("ssh", "enabled", SWITCH, 0, "The site's system users log in with a shell.", nullable=False))
_service("dav", "WebDAV access (/dav/) of the site's accounts.",
         _p("dav", "enabled", SWITCH, 1, "The site's accounts may use /dav/.", nullable=False))
_service("rampart", "Delegated brute-force whitelisting (rampart_* as the site administrator).",
         _p("rampart", "enabled", SWITCH, 0, "The site administrator may unban and whitelist addresses.",
            nullable=False),
         _p("rampart", "max", INT, None,
            "Addresses the site administrator may act on: whitelisted now plus unbanned in the last 24 hours "
            "(-1: unlimited, 0: none, null: [rampart] delegated_whitelist).", low=-1, high=4096),
         _p("rampart", "whitelist", ADDRESSES, [], "Addresses the site has whitelisted (rampart_whitelist keeps it).",
            writable=False, protected=True))
del _db, _label


#: Fields ``admin_collect`` answers when it is given none (ApisCP's default list, less ``aliases``).
DEFAULT_FIELDS = (("siteinfo", "email"), ("siteinfo", "admin_user"), ("billing", "invoice"),
                  ("billing", "parent_invoice"))


def param(service: str, name: str) -> Param:
    """The declaration of ``service.name``; InvalidArgument naming it when there is none."""
    entry = SERVICES.get(service)
    if entry is None:
        raise InvalidArgument(f"{_show(service)}.{_show(name)}: unknown service {_show(service)}; services are "
                              f"{', '.join(SERVICES)}")
    found = entry[1].get(name)
    if found is None:
        raise InvalidArgument(f"{service}.{_show(name)}: unknown parameter of {service}; it has "
                              f"{', '.join(entry[1])}")
    return found


def params_of(service: str) -> list:
    """Every :class:`Param` of ``service``; InvalidArgument when it is unknown."""
    entry = SERVICES.get(service)
    if entry is None:
        raise InvalidArgument(f"{_show(service)}: unknown service; services are {', '.join(SERVICES)}")
    return list(entry[1].values())


def all_params() -> list:
    """Every declared :class:`Param`, service by service."""
    return [p for _, params in SERVICES.values() for p in params.values()]


def split_name(name: Any) -> tuple:
    """``"siteinfo.domain"`` or ``"siteinfo,domain"`` -> ``("siteinfo", "domain")``; a bare
    service name -> ``(service, None)``.  InvalidArgument for anything else."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(f"{_show(name)}: expected service.param")
    text = name.strip()
    for separator in (".", ","):
        if separator in text:
            service, _, rest = text.partition(separator)
            if not rest or separator in rest or "." in rest or "," in rest:
                raise InvalidArgument(f"{_show(name)}: expected service.param")
            return service.strip(), rest.strip()
    return text, None


def parse_options(opts: Optional[dict], where: str = "opts", flag_names: Iterable[str] = ()) -> tuple:
    """``(values, flags)`` from an options map in any of the three spellings.

    ``values`` maps :class:`Param` to the raw value given (not yet validated); ``flags`` holds
    the flags nested in ``opts`` under an integer key, the narrow rule that lets Blesta send
    ``{siteinfo.plan: P, 0: {reset: true}}`` to a two-argument ``admin_edit_site``: only maps
    whose keys are all in ``flag_names`` are taken so.  InvalidArgument names the first unknown
    ``service.param``.
    """
    values: dict = {}
    flags: dict = {}
    allowed = {name.replace("-", "_") for name in flag_names}
    for key, value in (opts or {}).items():
        key_text = str(key).strip()
        if key_text.isdigit() and isinstance(value, dict) and allowed:
            unknown = [k for k in value if str(k).replace("-", "_") not in allowed]
            if unknown:
                raise InvalidArgument(f"{where}: the map under key {key_text} holds {_show(unknown[0])}, which is no "
                                      f"flag ({', '.join(sorted(allowed))})")
            flags.update({str(k): v for k, v in value.items()})
            continue
        service, name = split_name(key_text)
        if name is None:
            if not isinstance(value, dict):
                raise InvalidArgument(f"{where}: {_show(key_text)} names a service: give service.param or a map "
                                      "of its parameters")
            for sub, sub_value in value.items():
                _put(values, param(service, str(sub).strip()), sub_value)
            continue
        _put(values, param(service, name), value)
    return values, flags


def _put(values: dict, spec: Param, value: Any) -> None:
    if spec in values:
        raise InvalidArgument(f"{spec.qualified}: given twice")
    values[spec] = value


def is_null(value: Any) -> bool:
    """``None``, ``"null"``, ``"None"`` or ``""``: what ApisCP reads as null."""
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULL_WORDS)


def is_default(value: Any) -> bool:
    """``"DEFAULT"``: take the plan's (or the config's) value."""
    return isinstance(value, str) and value.strip() == DEFAULT


def validate(spec: Param, value: Any) -> Any:
    """``value`` checked and converted for ``spec``; InvalidArgument naming ``service.param``."""
    where = spec.qualified
    if is_null(value) and not (spec.kind == ADDRESSES and isinstance(value, str) and value == ""):
        if not spec.nullable:
            raise InvalidArgument(f"{where}: a value is required")
        return None
    try:
        return _CHECKS[spec.kind](spec, value)
    except InvalidArgument as exc:
        message = exc.message
        raise InvalidArgument(message if message.startswith(where) else f"{where}: {message}") from None


def _switch(spec: Param, value: Any) -> int:
    flag = None
    if isinstance(value, bool):
        flag = value
    elif isinstance(value, (int, float)) and value in (0, 1):
        flag = bool(value)
    elif isinstance(value, str):
        flag = parse_boolean(value)
    if flag is None:
        raise InvalidArgument(f"expected 1 or 0 (true or false), got {_show(value)}")
    number = int(flag)
    if spec.low is not None and number < spec.low:
        raise InvalidArgument("must be 1")
    return number


def as_switch(value: Any, where: str) -> bool:
    """``value`` read as a switch (``1``/``0``, ``true``/``false``); InvalidArgument naming ``where``."""
    try:
        return bool(_switch(Param("", where, SWITCH, None, ""), value))
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc.message}") from None


def _number(spec: Param, value: Any, integral: bool = False):
    if isinstance(value, bool):
        raise InvalidArgument(f"expected a number, got {_show(value)}")
    number = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise InvalidArgument(f"expected a number, got {_show(value)}") from None
    if not isinstance(number, (int, float)) or number != number or number in (float("inf"), float("-inf")):
        raise InvalidArgument(f"expected a number, got {_show(value)}")
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if integral and not isinstance(number, int):
        raise InvalidArgument(f"expected a whole number, got {_show(value)}")
    if spec.low is not None and number < spec.low:
        raise InvalidArgument(f"must be at least {spec.low:g}, got {number}")
    if spec.high is not None and number > spec.high:
        raise InvalidArgument(f"must be at most {spec.high:g}, got {number}")
    return number


def _text(spec: Param, value: Any, limit: int = _TEXT_LIMIT) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidArgument(f"expected text, got {_show(value)}")
    text = str(value).strip()
    if len(text) > limit:
        raise InvalidArgument(f"at most {limit} characters")
    if any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise InvalidArgument("control characters are not allowed")
    return text


def _email(spec: Param, value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        raise InvalidArgument("give one address")
    return validation.normalize_email(_text(spec, value, 254))


def _domain(spec: Param, value: Any) -> str:
    return validation.normalize_domain(_text(spec, value, 253))


def _username(spec: Param, value: Any) -> str:
    return validation.normalize_username(_text(spec, value, 32).lower())


def _plan(spec: Param, value: Any) -> str:
    text = _text(spec, value, 64)
    if not _PLAN_NAME.fullmatch(text):
        raise InvalidArgument(f"invalid plan name {_show(value)}: letters, digits, '.', '_' or '-'")
    return text


def _units(spec: Param, value: Any) -> str:
    text = _text(spec, value, 4).upper()
    text = _UNIT_ALIASES.get(text, text)
    if text not in UNIT_BYTES:
        raise InvalidArgument(f"expected one of {', '.join(UNIT_BYTES)}, got {_show(value)}")
    return text


def _prefix(spec: Param, value: Any) -> str:
    text = _text(spec, value, 16).lower()
    if not _PREFIX.fullmatch(text):
        raise InvalidArgument(f"invalid prefix {_show(value)}: a lower-case letter, then letters, digits or '_', "
                              "ending with '_' (at most 16 characters)")
    return text


def _secret(spec: Param, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument("expected a non-empty string")  # never the value itself
    if spec.service in ("mysql", "pgsql") and any(ord(c) < 32 or ord(c) == 127 for c in value):
        # written into .my.cnf/.pgpass, where a line break would start an option of its own
        raise InvalidArgument("control characters (line breaks included) are not allowed")
    return value


def _crypt(spec: Param, value: Any) -> str:
    if not isinstance(value, str) or not _CRYPT.fullmatch(value.strip()):
        raise InvalidArgument("expected a $6$ (SHA512-crypt) or $pbkdf2-sha512$ hash")
    return value.strip()


def _addresses(spec: Param, value: Any) -> list:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, (list, tuple)):
        raise InvalidArgument(f"expected a list of addresses, got {_show(value)}")
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise InvalidArgument(f"{_show(item)} is not an IP address or network") from None
    return out


_CHECKS = {
    SWITCH: _switch, INT: lambda s, v: _number(s, v, integral=True), NUMBER: _number, TEXT: _text,
    EMAIL: _email, DOMAIN: _domain, USERNAME: _username, PLAN: _plan, UNITS: _units, PREFIX: _prefix,
    SECRET: _secret, CRYPT: _crypt, ADDRESSES: _addresses,
}


def field_list(fields: Optional[Iterable]) -> list:
    """The ``(service, param)`` pairs ``admin_collect`` answers for ``fields``: ``None`` or an
    empty list -> :data:`DEFAULT_FIELDS`; ``*`` -> every service; a bare service -> all its
    readable parameters; ``service.param`` -> that one.  Secret parameters are never read back."""
    if not fields:
        return list(DEFAULT_FIELDS)
    out: list = []
    for field in fields:
        if field == "*":
            wanted = [p for p in all_params() if not p.secret]
        else:
            service, name = split_name(field)
            if name is None:
                wanted = [p for p in params_of(service) if not p.secret]
            else:
                spec = param(service, name)
                if spec.secret:
                    raise InvalidArgument(f"{spec.qualified}: a secret is never read back")
                wanted = [spec]
        out.extend((p.service, p.name) for p in wanted if (p.service, p.name) not in out)
    return out


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 60 else text[:57] + "..."
