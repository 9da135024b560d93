"""config.ini: ApisCP-style sections, read once, validated, with defaults.

Every key is declared here (or by a plugin through ``apiserver_config_sections``) with a type,
a default and help text.  A bad value stops start-up with :class:`ConfigError` naming the
section and key.  Values that the server can apply at run time (``[soap] enabled``,
``[anvil]``, ``[frontend] https_only``, ``[auth]`` limits) are read from the live
:class:`Config` on every use, so ``Config.set`` (the ``cp.config`` scope) takes effect at once.
"""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
from typing import Any, Callable, Iterable, Optional

from apiserver.addresses import is_host, unmap_network
from apiserver.booleans import parse_boolean

ENV_VAR = "APISERVER_CONFIG"


class ConfigError(Exception):
    """A config value is invalid; the message names ``[section] key``."""

    def __init__(self, section: str, key: str, reason: str):
        super().__init__(f"[{section}] {key}: {reason}")
        self.section, self.key, self.reason = section, key, reason


# --- value types ----------------------------------------------------------------------------

def parse_bool(raw: str) -> bool:
    value = parse_boolean(raw)
    if value is None:
        raise ValueError(f"expected true or false, got {raw!r}")
    return value


def int_range(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if low is not None and value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high}, got {value}")
        return value

    parse.type_name = "int"
    return parse


def parse_str(raw: str) -> str:
    return raw.strip()


def parse_networks(raw: str) -> tuple:
    """Comma/space separated addresses or CIDR networks -> tuple of ip_network (IPv4-mapped ones as IPv4)."""
    nets = []
    for word in raw.replace(",", " ").split():
        try:
            nets.append(unmap_network(ipaddress.ip_network(word, strict=False)))
        except ValueError:
            raise ValueError(f"{word!r} is not an IP address or CIDR network") from None
    return tuple(nets)


def choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    parse.type_name = "|".join(options)
    return parse


def parse_host(raw: str) -> str:
    """A host name or address, optionally with ``:port`` (no scheme, path or spaces)."""
    value = raw.strip()
    if not value or any(c in value for c in "/@?# \t"):
        raise ValueError(f"expected host or host:port, got {raw!r}")
    return value


def parse_system_user_or_auto(raw: str) -> str:
    """A system user name that exists here, or empty (chosen when needed)."""
    import pwd

    value = raw.strip()
    if value:
        try:
            pwd.getpwnam(value)
        except KeyError:
            raise ValueError(f"no system user {value!r} on this host") from None
    return value


parse_system_user_or_auto.type_name = "user"
def parse_plan_name(raw: str) -> str:
    """A plan's name: letters, digits, ``.``, ``_`` or ``-`` (its file is ``<name>.ini``)."""
    value = raw.strip()
    if not value or value.startswith(".") or not all(c.isalnum() or c in "._-" for c in value) or len(value) > 64:
        raise ValueError(f"expected a plan name (letters, digits, '.', '_', '-'), got {raw!r}")
    return value


def parse_names(raw: str) -> tuple:
    """``example, other`` -> ``("example", "other")``: names separated by commas or spaces."""
    return tuple(raw.replace(",", " ").split())


parse_bool.type_name = "bool"
parse_names.type_name = "names"
parse_plan_name.type_name = "name"
parse_str.type_name = "string"
parse_host.type_name = "host"
parse_networks.type_name = "networks"
port = int_range(0, 65535)
port.type_name = "port"


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: its name, parser (raw str -> value, ValueError if bad), default, help."""

    name: str
    parse: Callable[[str], Any]
    default: str
    help: str
    runtime: bool = False  # applied at once when changed while running
    secret: bool = False   # masked in scope output and logs

    @property
    def type_name(self) -> str:
        return getattr(self.parse, "type_name", "string")


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    help: str
    keys: tuple  # tuple[Key, ...]


K = Key
BUILTIN_SECTIONS = (
    Section("soap", "The SOAP and XML-RPC API.", (
        K("enabled", parse_bool, "true",
          "Serve the API; false answers every API URL with 403 (scope cp.api).", runtime=True),
        K("max_body_size", int_range(1024, 64 << 20), "1048576",
          "Largest request body in bytes; larger gets 413 before it is stored.", runtime=True),
    )),
    Section("anvil", "Brute-force throttle for every authentication gate.", (
        K("limit", int_range(1, 100000), "20",
          "Failed authentications from one address within ttl that block it.", runtime=True),
        K("ttl", int_range(1, 86400 * 7), "900", "Seconds a failure is remembered and a block lasts.", runtime=True),
        K("min_attempts", int_range(0, 100000), "3",
          "Failures before answers to that address are delayed.", runtime=True),
        K("whitelist", parse_networks, "127.0.0.1",
          "Addresses or networks never counted (comma separated).", runtime=True),
        K("base_delay", int_range(0, 60000), "250",
          "Milliseconds of delay at the first delayed attempt: an attempt after n failures (m <= n < limit, m = "
          "max(min_attempts, 1)) waits min(max_delay, base_delay * 2^(n - m)) ms.", runtime=True),
        K("max_delay", int_range(0, 120000), "8000", "Cap of the delay in milliseconds.", runtime=True),
        K("ipv6_prefix", int_range(1, 128), "64",
          "IPv6 clients are counted per network of this prefix length.", runtime=True),
        K("max_tracked", int_range(100, 10_000_000), "200000",
          "Most addresses tracked at once; the oldest are pruned first."),
        K("backend", choice("memory", "redis"), "memory", "Where counters live: memory (one node) or redis (shared)."),
        K("redis_url", parse_str, "redis://127.0.0.1:6379/0",
          "Redis URL when backend=redis.", secret=True),  # may hold a password
    )),
    Section("auth", "Accounts, passwords, API keys and IP restrictions.", (
        K("retain_ui_password", parse_bool, "true",
          "Keep the UI password in the session, AES-256-GCM encrypted with secret.", runtime=True),
        K("secret", parse_str, "",
          "Key for encrypting API keys and session passwords; empty: generated into state_dir on init.", secret=True),
        K("min_pw_length", int_range(1, 1024), "7", "Shortest password accepted.", runtime=True),
        K("ip_restriction_limit", int_range(0, 100000), "50",
          "Most IP restrictions one account may have.", runtime=True),
        K("ip_restriction_cache_ttl", int_range(0, 3600), "5",
          "Seconds a node reuses an account's IP restrictions before checking them again: one row read, and all of "
          "them only if another node changed them (their changes show after at most this; rows edited by hand within "
          "60 s or this, whichever is longer; 0: read on every login).", runtime=True),
        K("account_cache_ttl", int_range(0, 3600), "5",
          "Seconds a node reuses an account's email address before reading it again (other nodes' changes show after "
          "at most this; 0: read on every call).", runtime=True),
        K("pbkdf2_iterations", int_range(1000, 10_000_000), "210000",
          "PBKDF2-HMAC-SHA512 iterations for new password hashes.", runtime=True),
        K("hash_threads", int_range(1, 256), "4",
          "Threads for password hashing (hashing releases the GIL); at a lowered hash_priority at most one hash per "
          "usable CPU computes at a time, the other logins queue."),
        K("hash_priority", choice("idle", "batch", "normal"), "idle",
          "CPU priority of the hashing threads: idle (SCHED_IDLE: request handling always first; logins use the CPU it"
          " leaves), batch (SCHED_BATCH at nice 19: logins also get a small share of a saturated core), normal."),
        K("key_cache_ttl", int_range(0, 3600), "60",
          "Seconds a verified API key is trusted without a database look-up (0: always look up).", runtime=True),
        K("show_suspension_reason", parse_bool, "true",
          "Tell the accounts of a suspended site why (admin_deactivate_site's reason, without its lines starting "
          "with # or ;) once their credentials were right.", runtime=True),
    )),
    Section("frontend", "HTTP and HTTPS listeners.", (
        K("bind", parse_str, "127.0.0.1", "Address the listeners bind to (0.0.0.0 or :: for all)."),
        K("http_port", port, "2082", "HTTP port; 0 disables the HTTP listener."),
        K("https_port", port, "2083", "HTTPS port; 0 disables the HTTPS listener."),
        K("https_only", parse_bool, "false", "Refuse remote HTTP (loopback HTTP keeps working).", runtime=True),
        K("tls_certificate", parse_str, "",
          "PEM certificate (chain) for HTTPS; empty: a self-signed one in state_dir."),
        K("tls_key", parse_str, "", "PEM private key for tls_certificate."),
        K("public_url", parse_str, "",
          "HTTPS URL named in https_only refusals; empty: derived from the request's host.", runtime=True),
    )),
    Section("core", "Process-wide settings.", (
        K("state_dir", parse_str, "../state", "Database, secret and certificate; relative to this file."),
        K("http_trusted_forward", parse_networks, "",
          "Proxies whose X-Forwarded-For is believed (comma separated).", runtime=True),
        K("db_threads", int_range(1, 256), "8", "Threads for database calls and blocking module functions."),
        K("access_log", parse_bool, "false", "Log one line per HTTP request (never bodies or keys).", runtime=True),
        K("log_format", choice("text", "json"), "text", "Log as text lines or one JSON object per line."),
        K("debug", parse_bool, "false", "Debug logging (scope cp.debug).", runtime=True),
        K("cli_socket", parse_str, "apiserver.sock", "UNIX socket for cpcmd as root; relative to state_dir."),
        K("disabled_plugins", parse_names, "",
          "Installed plugins not to load: entry point or distribution names (comma separated); apiserver plugins lists"
          " them."),
        K("log_file", parse_str, "",
          "Log file, appended to and reopened on SIGHUP; relative to state_dir; empty: standard output."),
        K("shutdown_timeout", int_range(0, 3600), "10",
          "Seconds SIGTERM/SIGINT wait for calls in flight before the server exits."),
        K("metrics_allow", parse_networks, "127.0.0.1,::1",
          "Client addresses or networks that may read /health and /metrics (comma separated).", runtime=True),
    )),
    Section("session", "Sessions (esprit_id cookie).", (
        K("ttl", int_range(1, 86400 * 30), "900", "Seconds of inactivity after which a session ends.", runtime=True),
        K("backend", choice("memory", "redis", "db"), "memory",
          "Where sessions live: memory (one node), redis or db (shared)."),
        K("redis_url", parse_str, "redis://127.0.0.1:6379/0",
          "Redis URL when backend=redis.", secret=True),  # may hold a password
    )),
    Section("db", "Storage.", (
        K("url", parse_str, "", "SQLAlchemy URL; empty: SQLite file apiserver.db in state_dir.", secret=True),
    )),
    Section("mail", "Notices of password changes and resets and of unrecognized devices (the outbox).", (
        K("enabled", parse_bool, "true",
          "Queue notices in the outbox and send them by mail; false queues nothing.", runtime=True),
        K("smtp_host", parse_str, "127.0.0.1", "SMTP relay host.", runtime=True),
        K("smtp_port", port, "25", "SMTP relay port.", runtime=True),
        K("sender", parse_str, "apiserver@localhost", "From address of notices.", runtime=True),
        K("starttls", parse_bool, "false", "Use STARTTLS with the relay.", runtime=True),
        K("username", parse_str, "", "SMTP login; empty: none.", runtime=True),
        K("password", parse_str, "", "SMTP password.", runtime=True, secret=True),
        K("max_attempts", int_range(1, 1000), "10",
          "Delivery attempts of a notice before it is failed (it stays listed by admin_get_notices).", runtime=True),
        K("retry_base", int_range(1, 86400), "30",
          "Seconds before the second attempt; each further wait doubles, up to retry_cap.", runtime=True),
        K("retry_cap", int_range(1, 7 * 86400), "3600",
          "Longest wait in seconds between two attempts of a notice.", runtime=True),
        K("poll_interval", int_range(1, 3600), "10",
          "Seconds between looks at the outbox (a notice queued on this node is sent at once)."),
    )),
    Section("audit", "The security event trail.", (
        K("enabled", parse_bool, "true",
          "Record security events (logins, blocks, keys, passwords, restrictions, scopes, hijacks, failed notices).",
          runtime=True),
        K("keep_days", int_range(1, 36500), "90", "Days events are kept; older ones are pruned hourly.", runtime=True),
    )),
    Section("web", "Sites on disk and the web server that serves them.", (
        K("sites_root", parse_str, "sites",
          "Folder holding one home per site (<sites_root>/<domain>/); relative to state_dir."),
        K("user", parse_system_user_or_auto, "",
          "The web server's system user (Fortification's ACLs, audit); empty: www-data, or apache where that is the "
          "one that exists."),
        K("site_owner", parse_str, "",
          "System user owning the sites' files; empty: the user running the server, or when that is root the system "
          "user 'apiserver' (made by apiserver init)."),
    )),
    Section("plans", "Plans: the service values a site takes (admin_add_site, admin_edit_site).", (
        K("dir", parse_str, "",
          "Folder of plan files (<name>.ini, .skeleton.ini), relative to this file; empty: the plans shipped with "
          "apiserver (apiserver/lifecycle/plan_files)."),
        K("default", parse_plan_name, "basic", "The plan of a site that names none (a file <default>.ini in dir)."),
    )),
    Section("rampart", "Rampart: the ban API (rampart_*) over Anvil and fail2ban.", (
        K("fail2ban_socket", parse_str, "/var/run/fail2ban/fail2ban.sock",
          "fail2ban's socket; when no fail2ban answers there only the jail anvil exists; empty: never ask fail2ban."),
        K("fail2ban_client", parse_str, "fail2ban-client", "fail2ban's client program (a path or a name on PATH)."),
        K("delegated_whitelist", int_range(-1, 4096), "0",
          "Addresses a site administrator may act on (whitelisted plus unbanned in 24 hours) when its rampart.max is "
          "null (-1: unlimited, 0: none).", runtime=True),
        K("whitelist_ttl", int_range(0, 3600), "10",
          "Seconds a node reuses the stored whitelist before reading it again (other nodes' changes show after at "
          "most this).", runtime=True),
    )),
    Section("security", "The security module: Fortification windows and the setuid scan.", (
        K("learning_window", int_range(60, 86400 * 30), "1800",
          "Seconds fortify mode learn keeps a site writable before what the web server wrote becomes its profile.",
          runtime=True),
        K("write_window", int_range(60, 86400 * 30), "600",
          "Seconds fortify mode write keeps a site writable before max applies again.", runtime=True),
        K("template_root", parse_str, "/",
          "Filesystem template root that scan_setuid walks by default (ApisCP's FILESYSTEMTEMPLATE).", runtime=True),
    )),
    Section("dav", "WebDAV at /dav/ on both listeners: each account's site home (gate DAV).", (
        K("enabled", parse_bool, "true", "Serve /dav/; false answers it with 403 (scope apache.dav).", runtime=True),
        K("max_upload_size", int_range(1, 1 << 50), "1073741824",
          "Largest PUT body in bytes (spooled to a temporary file, never held in memory); larger gets 413 before it is"
          " stored.", runtime=True),
        K("threads", int_range(1, 256), "10", "Threads serving DAV requests (file work runs there, off the reactor)."),
        K("verified_password_ttl", int_range(0, 86400), "300",
          "Seconds a verified DAV password (kept as a keyed hash) is trusted without hashing again; a password change,"
          " reset or deletion ends it at once on this node, within 10 s on others (0: hash on every request).",
          runtime=True),
    )),
    Section("geoip", "Geolocation of login notices.", (
        K("database", parse_str, "GeoLite2-City.mmdb", "GeoLite2 City database; relative to state_dir.", runtime=True),
        K("account_id", int_range(0, 2**31 - 1), "0",
          "MaxMind GeoIP2 web service account id; 0: not used (scope auth.geoip-key).", runtime=True),
        K("license_key", parse_str, "",
          "MaxMind GeoIP2 web service licence key (scope auth.geoip-key).", runtime=True, secret=True),
        K("service_host", parse_host, "geoip.maxmind.com",
          "Host (host:port) of the GeoIP2 web service, always reached over HTTPS; geolite.info for MaxMind's GeoLite2 "
          "web service.", runtime=True),
    )),
)


class Config:
    """The validated configuration, live: ``get`` reads the current value, ``set`` changes it."""

    def __init__(self, sections: Iterable[Section], raw: dict, path: Optional[str]):
        self.path = os.path.abspath(path) if path else None
        self.sections = {s.name: s for s in sections}
        self._keys = {(s.name, k.name): k for s in self.sections.values() for k in s.keys}
        self._raw: dict = {}
        self._values: dict = {}
        self._observers: list = []
        for (section, name), key in self._keys.items():
            value = raw.get(section, {}).get(name, key.default)
            self._store(section, name, key, value)

    # reading -------------------------------------------------------------------------------
    def get(self, section: str, key: str) -> Any:
        return self._values[section, key]

    def raw(self, section: str, key: str) -> str:
        return self._raw[section, key]

    def key(self, section: str, key: str) -> Key:
        try:
            return self._keys[section, key]
        except KeyError:
            raise ConfigError(section, key, "no such key") from None

    def items(self):
        """((section, key), value) for every key, in declaration order."""
        return self._values.items()

    @property
    def base_dir(self) -> str:
        return os.path.dirname(self.path) if self.path else os.getcwd()

    @property
    def state_dir(self) -> str:
        return os.path.normpath(os.path.join(self.base_dir, self.get("core", "state_dir")))

    @property
    def plans_dir(self) -> str:
        """``[plans] dir`` relative to the config file, or the plans shipped with apiserver."""
        configured = self.get("plans", "dir")
        return os.path.normpath(os.path.join(self.base_dir, configured)) if configured else SHIPPED_PLANS

    def state_path(self, name: str) -> str:
        """A path relative to ``state_dir`` (absolute paths are kept)."""
        return os.path.join(self.state_dir, name)

    # changing ------------------------------------------------------------------------------
    def validate(self, section: str, key: str, raw: str) -> Any:
        """Parse ``raw`` for ``[section] key`` or raise ConfigError; changes nothing."""
        spec = self.key(section, key)
        try:
            return spec.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(section, key, str(exc)) from None

    def set(self, section: str, key: str, raw: str) -> Any:
        """Validate and apply a value in memory; observers are told.  Returns the parsed value."""
        spec = self.key(section, key)
        old = self._values[section, key]
        value = self._store(section, key, spec, raw)
        for observer in list(self._observers):
            observer(section, key, old, value)
        return value

    def observe(self, callback: Callable[[str, str, Any, Any], None]) -> None:
        """Call ``callback(section, key, old, new)`` after every ``set``."""
        self._observers.append(callback)

    def _store(self, section: str, name: str, key: Key, raw: str) -> Any:
        try:
            value = key.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(section, name, str(exc)) from None
        self._raw[section, name] = str(raw)
        self._values[section, name] = value
        return value


#: The plans shipped with apiserver (``[plans] dir`` empty).
SHIPPED_PLANS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lifecycle", "plan_files")
#: Where an installed server keeps its config (the systemd unit names it too).
SYSTEM_PATH = "/etc/apiserver/config.ini"
#: The checkout's config, found from this file, never from the working directory.
CHECKOUT_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "config.ini")
#: state_dir written into a new config outside a checkout (the unit's StateDirectory).
SYSTEM_STATE_DIR = "/var/lib/apiserver"


def config_path(explicit: Optional[str] = None) -> str:
    """The config file: ``--config``, else ``$APISERVER_CONFIG``, else ``/etc/apiserver/config.ini``
    when it exists, else the checkout's ``conf/config.ini`` (when this is a checkout), else
    ``/etc/apiserver/config.ini`` (which ``apiserver init`` then writes)."""
    if explicit:
        return os.path.abspath(explicit)
    if os.environ.get(ENV_VAR):
        return os.path.abspath(os.environ[ENV_VAR])
    if os.path.exists(SYSTEM_PATH):
        return SYSTEM_PATH
    if os.path.exists(CHECKOUT_PATH):
        return CHECKOUT_PATH
    return SYSTEM_PATH


def cross_check(config: "Config") -> None:
    """The checks that span keys, for start-up and for ``cp.config`` alike: ConfigError naming
    the section and key when the listeners would clash, ``[frontend] bind`` is not an address
    of this host (:func:`check_listenable`), a TLS certificate is given without its key (or
    a key without one), or ``[plans] dir`` holds no file of the ``[plans] default`` plan."""
    http_port, https_port = config.get("frontend", "http_port"), config.get("frontend", "https_port")
    if http_port and http_port == https_port:
        raise ConfigError("frontend", "https_port",
                          f"equals http_port ({http_port}); both listeners cannot share a port")
    cert, key = config.get("frontend", "tls_certificate"), config.get("frontend", "tls_key")
    if https_port and cert and not key:
        raise ConfigError("frontend", "tls_key",
                          f"empty, but tls_certificate is set ({cert}); give the certificate's private key")
    if https_port and key and not cert:
        raise ConfigError("frontend", "tls_certificate",
                          f"empty, but tls_key is set ({key}); give the certificate for it")
    plans, default = config.plans_dir, config.get("plans", "default")
    if not os.path.isdir(plans):
        raise ConfigError("plans", "dir", f"{plans} is not a folder")
    if not os.path.isfile(os.path.join(plans, default + ".ini")):
        raise ConfigError("plans", "default", f"no plan file {default}.ini in {plans}")
    bind = config.get("frontend", "bind")
    if not is_host(bind):
        raise ConfigError("frontend", "bind", f"{bind!r} is neither an IP address nor a host name")
    if http_port or https_port:
        check_listenable(config)


def check_listenable(config: "Config", ports: Iterable[int] = ()) -> None:
    """ConfigError naming the key unless ``[frontend] bind`` is an address of this host and each of
    ``ports`` is free to listen on there (a port another program holds, or one below 1024 without
    the right, would stop a start).  The one probe of both start-up and ``cp.config``."""
    import socket

    bind = config.get("frontend", "bind")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET  # as twisted's listenTCP chooses
    keys = {config.get("frontend", key): key for key in ("https_port", "http_port")}
    for port in (0, *ports):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a listener sets it
            try:
                probe.bind((bind, port))
            except OSError as exc:
                reason = exc.strerror or exc
                if not port:
                    raise ConfigError("frontend", "bind",
                                      f"cannot listen on {bind}: not an address of this host ({reason})") from None
                raise ConfigError("frontend", keys.get(port, "http_port"),
                                  f"cannot listen on {bind} port {port}: {reason}") from None


#: What a secret value is shown as.
MASK = "********"


def mask_secret(value: Any, reveal: int = 0) -> Any:
    """Hide a secret: empty stays empty; otherwise ``********`` plus its last ``reveal`` characters.

    Characters are revealed only from a value at least three times as long, so short secrets
    are always hidden whole.
    """
    if value in (None, ""):
        return value
    text = str(value)
    if reveal and len(text) >= 3 * reveal:
        return MASK + text[-reveal:]
    return MASK


def secret_values(config: "Config") -> list:
    """``(section, key)`` of every secret key that holds a secret: a non-empty value, and for a
    URL (``redis_url``, ``[db] url``) one with a password in it."""
    from urllib.parse import urlsplit

    found = []
    for (section, name), key in config._keys.items():
        raw = config.raw(section, name).strip()
        if not key.secret or not raw:
            continue
        if name.endswith("url"):
            try:
                if not urlsplit(raw).password:
                    continue
            except ValueError:
                pass
        found.append((section, name))
    return found


def reread_config(config: "Config", path: Optional[str] = None) -> "Config":
    """Blocking.  ``path`` (default: ``config``'s own file) read and validated with the same
    sections, plugins' included, as ``config``: what the next start would run with."""
    return load_config(path or config.path, [s for s in config.sections.values() if s not in BUILTIN_SECTIONS])


def changed_keys(running: "Config", fresh: "Config") -> list:
    """``(section, key)`` of every key whose value in ``fresh`` differs from ``running``."""
    return [(section, key) for (section, key), value in fresh.items() if value != running.get(section, key)]


def load_config(path: Optional[str], extra_sections: Iterable[Section] = ()) -> Config:
    """Read and validate ``path`` (a missing file means all defaults only when ``path`` is None).

    Unknown sections or keys are refused too: a typo must not silently leave a default in force.
    """
    sections = list(BUILTIN_SECTIONS) + list(extra_sections)
    known = {s.name: {k.name for k in s.keys} for s in sections}
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str  # keys are case-sensitive, as in ApisCP
    if path is not None:
        if not os.path.exists(path):
            raise ConfigError("-", "-", f"config file {path} does not exist")
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError("-", "-", f"{path} is not a valid ini file: {exc}") from None
    raw: dict = {}
    for section in parser.sections():
        if section not in known:
            raise ConfigError(section, "-", f"unknown section in {path}")
        for name, value in parser.items(section):
            if name not in known[section]:
                raise ConfigError(section, name, f"unknown key in {path}")
            raw.setdefault(section, {})[name] = value
    return Config(sections, raw, path)


def render_ini(sections: Iterable[Section] = BUILTIN_SECTIONS, values: Optional[dict] = None) -> str:
    """The shipped ``conf/config.ini``: every key with its help as a comment and its default
    (or the value ``values[(section, key)]``, which ``apiserver init`` uses for state_dir).

    ``tests/test_config.py`` fails when the committed file drifts from this.
    """
    values = values or {}
    lines = [
        "; apiserver configuration (ApisCP-style sections).",
        "; Every key is optional; the value shown is the default. A bad value stops start-up",
        "; with an error naming the section and key. Keys marked (run time) can also be changed",
        "; while the server runs: cpcmd scope:set cp.config SECTION KEY VALUE",
        "",
    ]
    for section in sections:
        lines.append(f"; {section.help}")
        lines.append(f"[{section.name}]")
        for key in section.keys:
            note = " (run time)" if key.runtime else ""
            lines.append(f"; {key.help}{note} [{key.type_name}]")
            lines.append(f"{key.name} = {values.get((section.name, key.name), key.default)}")
        lines.append("")
    return "\n".join(lines)


def render_markdown(sections: Iterable[Section] = BUILTIN_SECTIONS) -> str:
    """The README's config reference table (one row per key)."""
    rows = ["| section | key | default | type | what it does |", "| --- | --- | --- | --- | --- |"]
    for section in sections:
        for key in section.keys:
            note = " Changeable at run time." if key.runtime else ""
            default = f"`{key.default}`" if key.default else "(empty)"
            rows.append(f"| [{section.name}] | `{key.name}` | {default} | {key.type_name} | {key.help}{note} |")
    return "\n".join(rows)
