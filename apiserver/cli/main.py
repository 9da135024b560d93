"""The ``apiserver`` command: ``init``, ``serve``, ``set``, ``wsdl``, ``plugins`` and ``plugin-template``."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Optional

from apiserver.config import LOOKUP_ORDER, ConfigError, config_path

USAGE_EPILOG = f"""\
first start:   apiserver init    (creates the config when there is none, the database, secret,
                                  certificate and the appliance administrator; prints its API key last)
run:           apiserver serve   (foreground; stop with Ctrl-C, SIGINT or SIGTERM)
settings:      apiserver set frontend http_port 8082   (validated; written to the config file)
upgrade:       apiserver migrate-sites  (sites to site<N>/fst with their own system accounts;
                                  serve does it too at every start; a second run changes nothing)
{textwrap.fill("config file:   " + LOOKUP_ORDER, 95, subsequent_indent=" " * 15)}
options may come before or after the command: apiserver init --config FILE
"""

SERVE_DESCRIPTION = """\
Run the API server in the foreground: check the config and the state that 'apiserver init'
made, open the HTTP (and HTTPS) listeners of [frontend] and the cpcmd socket, serve SOAP,
XML-RPC, the WSDLs, the UI login and DAV, and log to standard output (or [core] log_file).
SIGHUP re-reads the config and reopens the log; SIGINT (Ctrl-C) and SIGTERM stop it cleanly.
Under systemd use the shipped unit; twistd -n apiserver runs the same server."""


def _version() -> str:
    from apiserver import __version__

    return f"apiserver {__version__}"


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before or after the command: the subcommands' copy never overrides
    # the top-level one with its default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=f"config file ({LOOKUP_ORDER})")
    parser = argparse.ArgumentParser(
        prog="apiserver", description="ApisCP-compatible SOAP/XML-RPC API server.",
        epilog=USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--config", metavar="FILE", help=f"config file ({LOOKUP_ORDER})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    init = sub.add_parser("init", parents=[common], help="create the state a first start needs and print the "
                          "administrator's API key", description="Create what a first start needs and change "
                          "nothing that exists: the config file when there is none, the state folder, the "
                          "database, the secret, the certificate and the appliance administrator, whose API key "
                          "is printed last (only when it is made).")
    init.add_argument("--database-users", action="store_true",
                      help="also make the server's own user (30-character password) on this host's MariaDB and "
                           "PostgreSQL when [databases] mysql_admin_url / pgsql_admin_url are empty and the "
                           "server lets its superuser in, and write its URL to the config file")
    sub.add_parser("serve", parents=[common], help="run the server in the foreground until SIGTERM/SIGINT",
                   description=SERVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    setting = sub.add_parser("set", parents=[common], help="change one key of the config file, validated",
                             description="Change [SECTION] KEY in the config file in use (in a checkout its "
                             "local state/config.ini, never the tracked conf/config.ini), validated as start-up "
                             "validates it; a running server applies it on restart (run-time keys at once "
                             "with cpcmd scope:set cp.config SECTION KEY VALUE).")
    setting.add_argument("section", metavar="SECTION")
    setting.add_argument("key", metavar="KEY")
    setting.add_argument("value", metavar="VALUE")
    wsdl = sub.add_parser("wsdl", parents=[common], help="print the WSDL")
    wsdl.add_argument("--style", choices=("rpc", "document"), default="rpc",
                      help="rpc: what ApisCP's clients use (default); document: document/literal wrapped")
    wsdl.add_argument("--location", default="http://localhost:2082/soap", help="soap:address location to write")
    sub.add_parser("plugins", parents=[common], help="list the installed plugins with their versions")
    sub.add_parser("migrate-sites", parents=[common],
                   help="move sites from <sites_root>/<domain>/ to site<N>/fst with their own "
                   "system accounts, make the state private; print what changed (serve does it at start-up)")
    template = sub.add_parser("plugin-template", parents=[common],
                              help="write a new plugin package (module, scope, event hook, tests)")
    template.add_argument("name", metavar="NAME", help="the plugin's module name: lower-case letters and digits")
    template.add_argument("dir", metavar="DIR", nargs="?", help="where to write it (default: ./apiserver-NAME)")
    return parser


def _load(path: Optional[str]):
    """``(plugin_manager, config)`` for ``--config`` (or the default config file)."""
    from apiserver.plugins import load_plugins_and_config

    return load_plugins_and_config(config_path(path))


LOCAL_HEADER = """\
; Local settings of this checkout, kept out of git (state/ is ignored). scripts/serve.sh
; --port/--https-port/--bind, 'apiserver set SECTION KEY VALUE' and 'cpcmd scope:set' write
; here. A key not set here has its default: conf/config.ini lists every key with its help.
[core]
; Relative to this file: this folder holds the database, secret and certificate.
state_dir = .
"""


def write_default_config(path: str, sections) -> None:
    """Write a commented config (every key, its help and default) at ``path``, owner-only; a
    checkout's local ``state/config.ini`` gets only the keys that differ from the defaults."""
    from apiserver.config import LOCAL_PATH, SYSTEM_PATH, SYSTEM_STATE_DIR, render_ini
    from apiserver.files import atomic_write

    path = os.path.abspath(path)
    if path == LOCAL_PATH:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, LOCAL_HEADER, mode=0o600)
        return
    state_dir = SYSTEM_STATE_DIR if path == SYSTEM_PATH else "state"
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    atomic_write(path, render_ini(sections, {("core", "state_dir"): state_dir}) + "\n", mode=0o600)


def _printer(json_lines: bool):
    """print(line, **fields): plain lines, or one JSON object per line as the server logs them."""
    if not json_lines:
        return lambda line, **fields: print(line)
    import datetime
    import json

    def emit(line: str, **fields) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        print(json.dumps({"time": now, "level": "info", "namespace": "apiserver.init", "message": line, **fields}))
    return emit


def cmd_init(args) -> int:
    from apiserver.accounts import initialize_state
    from apiserver.config import BUILTIN_SECTIONS
    from apiserver.plugins import load_plugins_and_config

    path = config_path(args.config)
    written = None

    def write_default(sections) -> None:  # no config yet: the same plugins' sections are written, then loaded
        nonlocal written
        write_default_config(path, list(BUILTIN_SECTIONS) + sections)
        written = (f"Config written: {path} (edit it or use 'apiserver set SECTION KEY VALUE'; run init again "
                   "if you change state_dir or [db])")

    _pm, config = load_plugins_and_config(path, if_missing=write_default)
    result = initialize_state(config)
    lines = ([written] if written else []) + list(result.lines)
    if config.get("frontend", "https_port"):
        from apiserver.transport.tls import ensure_certificate

        cert, _key = ensure_certificate(config)
        lines.append(f"TLS certificate: {cert}")
    if getattr(args, "database_users", False):
        lines += _database_users(config)
    say = _printer(config.get("core", "log_format") == "json")
    for line in lines:
        say(line)
    if result.admin_key:
        if config.get("core", "log_format") == "json":
            say("Appliance administrator API key (shown once; keep it safe)", admin_api_key=result.admin_key)
        else:
            print("Appliance administrator API key (shown once; keep it safe):")
            print(result.admin_key)
    return 0


def _database_users(config) -> list:
    """Blocking.  ``init --database-users``: :func:`apiserver.host.database_admins.provision`, each URL
    written to the config file in use as ``apiserver set`` writes it (owner-only: a secret)."""
    from apiserver.config_file import ConfigFile
    from apiserver.host.database_admins import provision

    return provision(config, lambda key, url: ConfigFile(config).write([("databases", key, url)]))


def cmd_set(args) -> int:
    """Write one validated key into the config file in use (which must exist: run init first)."""
    from apiserver.config_file import ConfigFile
    from apiserver.errors import ApiError

    from apiserver.config import BUILTIN_SECTIONS, LOCAL_PATH

    path = config_path(args.config)
    if path == LOCAL_PATH and not os.path.exists(path):
        write_default_config(path, BUILTIN_SECTIONS)  # a checkout's first setting: its local file
    _pm, config = _load(path)
    before = config.raw(args.section, args.key) if (args.section, args.key) in dict(config.items()) else None
    if before is not None and before.strip() == args.value:
        print(f"[{args.section}] {args.key} is {args.value} already in {path}")
        return 0
    try:
        ConfigFile(config).write([(args.section, args.key, args.value)])
    except ApiError as exc:
        message = str(exc).removeprefix("cp.config: ")
        print(f"apiserver: {message} (config file {path}; nothing changed)", file=sys.stderr)
        return 2
    print(f"[{args.section}] {args.key} = {args.value} written to {path}")
    return 0


def cmd_serve(args) -> int:
    """Build the service tree (the same as twistd's), bind, run until SIGTERM/SIGINT."""
    from twisted.internet import reactor

    from apiserver.service import make_service, restore_sigint

    restore_sigint()
    server = make_service(args.config, reactor=reactor)
    server.begin_logging()
    server.privilegedStartService()  # binds every listener; ListenFailed names the address
    status = []

    def start():
        try:
            server.startService()
        except Exception as exc:
            from twisted.logger import Logger

            Logger(namespace="apiserver.server").failure("start-up failed")
            print(f"apiserver: cannot start: {exc}", file=sys.stderr)
            status.append(1)
            reactor.stop()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()
    return status[0] if status else 0


def cmd_wsdl(args) -> int:
    from apiserver.app import create_application
    from apiserver.transport.wsdl import generate_wsdl

    pm, config = _load(args.config)
    app = create_application(config, plugin_manager=pm)
    sys.stdout.buffer.write(generate_wsdl(app.registry, args.style, args.location))
    return 0


def cmd_plugins(args) -> int:
    from apiserver.plugins import make_plugin_manager, read_disabled_plugins

    # Informational: works without a config file; [core] disabled_plugins is honoured when there is one.
    pm = make_plugin_manager(disabled=read_disabled_plugins(config_path(args.config)))
    for info in pm.plugins:
        print(info.describe())
    return 0


def cmd_plugin_template(args) -> int:
    from apiserver.plugin_template import TemplateError, write_template

    try:
        written = write_template(args.name, args.dir)
    except TemplateError as exc:
        print(f"apiserver: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written}; next: pip install -e {written} && python -m pytest {written}/tests")
    return 0


def cmd_migrate_sites(args) -> int:
    from apiserver.service import migrate_sites

    changes = migrate_sites(args.config)
    for change in changes:
        print(change)
    print(f"{len(changes)} changes" if changes else "sites are up to date; nothing changed")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from apiserver.accounts import StateError
    from apiserver.plugins import PluginError
    from apiserver.service import StartError
    from apiserver.storage import SchemaError

    try:
        return {"init": cmd_init, "serve": cmd_serve, "set": cmd_set, "wsdl": cmd_wsdl, "plugins": cmd_plugins,
                "plugin-template": cmd_plugin_template, "migrate-sites": cmd_migrate_sites}[args.command](args)
    except ConfigError as exc:
        where = "" if "config file" in str(exc) else f" (config file {config_path(args.config)})"
        print(f"apiserver: config error: {exc}{where}", file=sys.stderr)
        return 2
    except (StateError, SchemaError, PluginError, StartError) as exc:
        print(f"apiserver: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:  # an unreachable or refusing database: no traceback, no password
        reason = str(exc.orig if getattr(exc, "orig", None) else exc)[:300]
        print(f"apiserver: database error: {type(exc).__name__}: {reason}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
