"""``cpcmd``: call any module function from the command line, like ApisCP's.

As root on the server it talks to the running server over the local socket (no key, gate
``CLI``); with ``--url URL --key KEY`` (or ``$APISERVER_URL``/``$APISERVER_KEY``) it calls a
server over XML-RPC (gate ``SOAP``).  ``-d DOMAIN [-u USER]`` acts as that site's
administrator or user; remotely through ``admin_hijack`` and the ``esprit_id`` session.
"""

from __future__ import annotations

import argparse
import configparser
import datetime
import json
import os
import re
import signal
import socket
import ssl
import sys
import urllib.parse
import xmlrpc.client
from typing import Any, Optional

from apiserver.cli.args import ArgumentSyntaxError, parse_arguments
from apiserver import __version__
from apiserver.config import BUILTIN_SECTIONS, Config, ConfigError, config_path

EXIT_FAULT, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

EPILOG = """\
examples:
  cpcmd common:whoami
  cpcmd -d domain.com auth:get-ip-restrictions
  cpcmd -d domain.com auth:restrict-ip 10.1.2.3 UI
  cpcmd scope:set auth.geoip-key '[id:1234,key:key-name]'
  cpcmd -l auth                      list commands whose name contains "auth"
  cpcmd misc:info auth:restrict-ip   signature and help of a command
  cpcmd auth:restrict-ip --help      the same

arguments: null, true, false, numbers, "quoted strings", '[a,b,c]' lists and
'[key:value,key2:value2]' hashes (nesting allowed); -i json takes JSON instead.
local mode (as root on the server): the socket named by [core] cli_socket in the config
file: --config FILE, else $APISERVER_CONFIG, else /etc/apiserver/config.ini when it exists,
else the checkout's local state/config.ini.
remote mode: --url https://host:2083 --key KEY (or $APISERVER_URL, $APISERVER_KEY).
exit status: 0 success, 1 the call failed (message on stderr), 2 usage error, 3 server unreachable.
"""


class CallFailed(Exception):
    """The server answered with a fault: ``code`` (``Client.NotFound`` ...) and ``message``."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class Unreachable(Exception):
    """The server could not be reached; the message says what to check."""


# --- the two ways to reach a server -------------------------------------------------------

class LocalServer:
    """The running server's CLI socket on this machine."""

    def __init__(self, path: str, site: Optional[str], user: Optional[str]):
        self.path, self.site, self.user = path, site, user

    def call(self, function: str, args: list) -> Any:
        request = {"function": function, "args": args, "kwargs": {}, "site": self.site, "user": self.user}
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.connect(self.path)
            except FileNotFoundError:
                raise Unreachable(f"no server socket at {self.path}: is 'apiserver serve' running with this config? "
                                  "(or call a server with --url URL --key KEY)") from None
            except PermissionError:
                raise Unreachable(f"permission denied on {self.path}: run cpcmd as root on the server, "
                                  "or use --url URL --key KEY") from None
            except ConnectionRefusedError:
                raise Unreachable(f"nothing listens on {self.path}: start the server with 'apiserver serve'") from None
            sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
            answer = _read_line(sock)
        finally:
            sock.close()
        if not answer:
            raise Unreachable(f"the server closed {self.path} without answering; see its log")
        message = json.loads(answer)
        if "fault" in message:
            raise CallFailed(message["fault"].get("code", "Server"), message["fault"].get("message", ""))
        return message.get("result")


def _read_line(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if b"\n" in chunk:
            break
    return b"".join(chunks).split(b"\n", 1)[0]


class RemoteServer:
    """A server reached over XML-RPC with an API key (gate SOAP)."""

    def __init__(self, url: str, key: str, site: Optional[str], user: Optional[str], insecure: bool = False):
        self.endpoint = xmlrpc_endpoint(url)
        self.key, self.site, self.user = key, site, user
        self.context = ssl._create_unverified_context() if insecure else None  # noqa: S323 - user's explicit choice
        self._proxy = None

    def _make_proxy(self, query: str = "", headers=()) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(self.endpoint + query, allow_none=True, use_builtin_types=True,
                                         context=self.context, headers=list(headers))

    def _connect(self) -> xmlrpc.client.ServerProxy:
        if self._proxy is None:
            keyed = self._make_proxy("?" + urllib.parse.urlencode({"authkey": self.key}))
            if self.site is None and self.user is None:
                self._proxy = keyed
            else:
                session = self._invoke(keyed, "admin_hijack", [self.site, self.user, "SOAP"])
                self._proxy = self._make_proxy(headers=[("Cookie", f"esprit_id={session}")])
        return self._proxy

    def call(self, function: str, args: list) -> Any:
        return self._invoke(self._connect(), operation_name(function), args)

    def _invoke(self, proxy, method: str, args: list) -> Any:
        try:
            return getattr(proxy, method)(*args)
        except xmlrpc.client.Fault as fault:
            code, _, message = str(fault.faultString).partition(": ")
            raise CallFailed(code, message or fault.faultString) from None
        except xmlrpc.client.ProtocolError as exc:
            raise Unreachable(f"{self.endpoint} answered HTTP {exc.errcode} {exc.errmsg}") from None
        except (OSError, ssl.SSLError, xmlrpc.client.ResponseError) as exc:
            hint = " (a self-signed certificate? add --insecure)" if isinstance(exc, ssl.SSLError) else ""
            raise Unreachable(f"cannot reach {self.endpoint}: {exc}{hint}") from None


def xmlrpc_endpoint(url: str) -> str:
    """``https://host:2083`` (or ``.../soap``, ``.../xmlrpc?x``) -> ``https://host:2083/xmlrpc``."""
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    path = re.sub(r"/(soap|xmlrpc)?/*$", "", parts.path)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + "/xmlrpc", "", ""))


def operation_name(command: str) -> str:
    """``auth:restrict-ip`` -> ``auth_restrict_ip`` (other spellings pass through)."""
    module, sep, function = command.partition(":")
    return f"{module}_{function.replace('-', '_')}" if sep else command


def command_name(operation: str) -> str:
    """``auth_restrict_ip`` -> ``auth:restrict-ip`` (module names never contain '_')."""
    module, sep, function = operation.partition("_")
    return f"{module}:{function.replace('_', '-')}" if sep else operation


# --- output ------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON")


def render(value: Any, style: str) -> str:
    """The text cpcmd prints: ``cli`` plain values as is and structures as YAML, or json/yaml."""
    if style == "json":
        return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)
    if style == "cli":
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
    import yaml  # only structures need it

    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False, allow_unicode=True).rstrip("\n")


# --- command line ------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpcmd", usage="cpcmd [-d DOMAIN] [-u USER] [-o cli|json|yaml] [-i json] module:function-name [ARG...]",
        description="Call an apiserver module function.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cpcmd (apiserver) {__version__}")
    parser.add_argument("-d", "--domain", metavar="DOMAIN", help="act as this site's administrator")
    parser.add_argument("-u", "--user", metavar="USER", help="act as this user (of DOMAIN)")
    parser.add_argument("-o", "--output", choices=("cli", "json", "yaml"), default="cli",
                        help="cli (default): plain values as is, structures as YAML")
    parser.add_argument("-i", "--input", choices=("json",), help="read each ARG as JSON instead of ApisCP syntax")
    parser.add_argument("-l", "--list", nargs="?", const="", metavar="FILTER",
                        help="list commands (whose name contains FILTER)")
    parser.add_argument("--config", metavar="FILE", help="config file of the local server")
    parser.add_argument("--url", default=os.environ.get("APISERVER_URL"), help="remote server URL ($APISERVER_URL)")
    parser.add_argument("--key", default=os.environ.get("APISERVER_KEY"), help="API key for --url ($APISERVER_KEY)")
    parser.add_argument("--insecure", action="store_true", help="with --url https://: do not verify the certificate")
    parser.add_argument("command", nargs="?", metavar="module:function-name",
                        help="the function: auth:restrict-ip (or auth_restrict_ip); 'cpcmd -l' lists them")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG",
                        help="its arguments, in order (syntax below); options go before the command")
    return parser


def socket_path(config_file: Optional[str]) -> str:
    """The CLI socket of the server configured by ``config_file`` (or the default config).

    Only ``[core]`` is read and validated: loading the plugins for their config sections
    would import the whole server and make every cpcmd call half a second slower.
    """
    path = config_path(config_file)
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.optionxform = str
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        raise ConfigError("-", "-", f"config file {path} does not exist "
                          "(give --config FILE or set $APISERVER_CONFIG)") from None
    except (OSError, configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError("-", "-", f"cannot read {path}: {exc}") from None
    core = next(section for section in BUILTIN_SECTIONS if section.name == "core")
    known = {key.name for key in core.keys}
    raw = {name: value for name, value in parser.items("core") if name in known} if parser.has_section("core") else {}
    config = Config([core], {"core": raw}, path)
    return config.state_path(config.get("core", "cli_socket"))


def list_filter(text: str) -> Optional[str]:
    """The filter of ``-l``, as given: the server matches it as ``misc:list-commands`` does
    (:mod:`apiserver.filters`: a word by substring, a pattern with ``*`` as a glob)."""
    return text or None


def _values(words: list, as_json: bool) -> list:
    if not as_json:
        return parse_arguments(words)
    values = []
    for index, word in enumerate(words, 1):
        try:
            values.append(json.loads(word))
        except ValueError as exc:
            raise ArgumentSyntaxError(word, exc.pos, f"argument {index} is not JSON ({exc.msg})") from None
    return values


def _explain(error: CallFailed) -> str:
    """The fault for a person: cpcmd spellings in suggestions, and where to look next."""
    message = error.message
    if error.code == "Client.UnknownMethod":
        message = re.sub(r"did you mean (.*)\?$",
                         lambda m: f"did you mean {', '.join(command_name(n.strip()) for n in m.group(1).split(','))}?",
                         message)
        message += " ('cpcmd -l' lists the commands)"
    return f"{error.code}: {message}"


def main(argv=None) -> int:
    """Run cpcmd; returns the exit status."""
    if argv is None and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `cpcmd -l | head` ends quietly, like other tools
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.list is not None and opts.command:
        parser.error("-l takes one FILTER; give either -l [FILTER] or a command")
    if opts.list is None and not opts.command:
        parser.error("no command given: try 'cpcmd -l' for the list, or 'cpcmd common:whoami'")
    try:
        if opts.list is not None:
            command, values = "misc:list-commands", [list_filter(opts.list)]
        elif opts.args in (["--help"], ["-h"]):
            command, values = "misc:info", [opts.command]
        else:
            command, values = opts.command, _values(opts.args, opts.input == "json")
    except ArgumentSyntaxError as exc:
        print(f"cpcmd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if opts.url and not opts.key:
        parser.error("--url needs --key KEY (or $APISERVER_KEY)")
    if opts.url and opts.user and not opts.domain:
        parser.error("-u USER needs -d DOMAIN with --url (the user of which site?)")
    try:
        if opts.url:
            server = RemoteServer(opts.url, opts.key, opts.domain, opts.user, opts.insecure)
        else:
            server = LocalServer(socket_path(opts.config), opts.domain, opts.user)
        result = server.call(command, values)
    except CallFailed as exc:
        print(f"cpcmd: {_explain(exc)}", file=sys.stderr)
        misplaced = [word for word in opts.args if word in parser._option_string_actions]
        if exc.code == "Client.InvalidArgument" and misplaced:
            print(f"cpcmd: options go before the command ({', '.join(misplaced)} was read as an argument): "
                  f"cpcmd OPTIONS {opts.command} ARG...", file=sys.stderr)
        return EXIT_FAULT
    except Unreachable as exc:
        print(f"cpcmd: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ConfigError as exc:
        print(f"cpcmd: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if opts.list is not None and not result:
        print(f"cpcmd: no command matches {opts.list!r} ('cpcmd -l' lists them all)", file=sys.stderr)
        return EXIT_FAULT
    text = render(result, opts.output)
    if text:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
