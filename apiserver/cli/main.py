"""The ``apiserver`` command: ``init``, ``serve``, ``wsdl``, ``plugins`` and ``plugin-template``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from apiserver.config import ConfigError, config_path

USAGE_EPILOG = """\
first start:   apiserver init    (creates the database, secret, certificate and the
                                  appliance administrator; prints its API key last)
run:           apiserver serve   (foreground; stop with Ctrl-C or SIGTERM)
upgrade:       apiserver migrate-sites  (sites to site<N>/fst with their own system accounts;
                                  serve does it too at every start; a second run changes nothing)
config file:   --config FILE, else $APISERVER_CONFIG, else /etc/apiserver/config.ini,
               else the checkout's conf/config.ini (init writes a commented one if none exists)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apiserver", description="ApisCP-compatible SOAP/XML-RPC API server.",
        epilog=USAGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="config file (default: $APISERVER_CONFIG, "
                        "/etc/apiserver/config.ini or the checkout's conf/config.ini)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("init", help="create the state a first start needs and print the administrator's API key")
    sub.add_parser("serve", help="run the server in the foreground until SIGTERM/SIGINT")
    wsdl = sub.add_parser("wsdl", help="print the WSDL")
    wsdl.add_argument("--style", choices=("rpc", "document"), default="rpc",
                      help="rpc: what ApisCP's clients use (default); document: document/literal wrapped")
    wsdl.add_argument("--location", default="http://localhost:2082/soap", help="soap:address location to write")
    sub.add_parser("plugins", help="list the installed plugins with their versions")
    sub.add_parser("migrate-sites", help="move sites from <sites_root>/<domain>/ to site<N>/fst with their own "
                   "system accounts, make the state private; print what changed (serve does it at start-up)")
    template = sub.add_parser("plugin-template", help="write a new plugin package (module, scope, event hook, tests)")
    template.add_argument("name", metavar="NAME", help="the plugin's module name: lower-case letters and digits")
    template.add_argument("dir", metavar="DIR", nargs="?", help="where to write it (default: ./apiserver-NAME)")
    return parser


def _load(path: Optional[str]):
    """``(plugin_manager, config)`` for ``--config`` (or the default config file)."""
    from apiserver.plugins import load_plugins_and_config

    return load_plugins_and_config(config_path(path))


def write_default_config(path: str, sections) -> None:
    """Write a commented config (every key, its help and default) at ``path``, owner-only."""
    from apiserver.config import SYSTEM_PATH, SYSTEM_STATE_DIR, render_ini
    from apiserver.files import atomic_write

    state_dir = SYSTEM_STATE_DIR if os.path.abspath(path) == SYSTEM_PATH else "state"
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
    atomic_write(path, render_ini(sections, {("core", "state_dir"): state_dir}) + "\n", mode=0o600)


def cmd_init(args) -> int:
    from apiserver.accounts import initialize_state
    from apiserver.config import BUILTIN_SECTIONS
    from apiserver.plugins import load_plugins_and_config

    path = config_path(args.config)
    written = None

    def write_default(sections) -> None:  # no config yet: the same plugins' sections are written, then loaded
        nonlocal written
        write_default_config(path, list(BUILTIN_SECTIONS) + sections)
        written = (f"Config written: {path} (every key with its default; edit it, then run init again "
                   "if you change state_dir or [db])")

    _pm, config = load_plugins_and_config(path, if_missing=write_default)
    result = initialize_state(config)
    lines = ([written] if written else []) + list(result.lines)
    if config.get("frontend", "https_port"):
        from apiserver.transport.tls import ensure_certificate

        cert, _key = ensure_certificate(config)
        lines.append(f"TLS certificate: {cert}")
    for line in lines:
        print(line)
    if result.admin_key:
        print("Appliance administrator API key (shown once; keep it safe):")
        print(result.admin_key)
    return 0


def cmd_serve(args) -> int:
    """Build the service tree (the same as twistd's), bind, run until SIGTERM/SIGINT."""
    from twisted.internet import reactor

    from apiserver.service import make_service

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
        return {"init": cmd_init, "serve": cmd_serve, "wsdl": cmd_wsdl, "plugins": cmd_plugins,
                "plugin-template": cmd_plugin_template, "migrate-sites": cmd_migrate_sites}[args.command](args)
    except ConfigError as exc:
        print(f"apiserver: config error: {exc}", file=sys.stderr)
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
