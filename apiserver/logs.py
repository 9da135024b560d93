"""The server's log: text lines or one JSON object per line, to stdout or ``[core] log_file``.

Text lines (the default) are Twisted's classic format.  ``[core] log_format=json`` writes one
object per line (no record separator) with ``time`` (ISO 8601, UTC), ``level``, ``namespace``,
``message`` (the rendered text), ``traceback`` for failures, and the event's own fields that
are plain values and whose names do not suggest a secret.  In both, :func:`mask_url` hides API
keys in logged URLs however they were sent, in messages and tracebacks alike; an entry has at
most :data:`MAX_ENTRY` characters, and identical warnings and errors within
:data:`REPEAT_WINDOW` seconds are counted rather than repeated (:class:`RepeatedErrors`).
:class:`LogStream` is the destination; SIGHUP calls its :meth:`LogStream.reopen` so
logrotate can move the file away.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import threading
from typing import IO, Optional
from urllib.parse import unquote_plus

from twisted.logger import (
    FileLogObserver, FilteringLogObserver, LogLevel, LogLevelFilterPredicate, formatEvent,
    formatEventAsClassicLogText, globalLogBeginner,
)

def one_line_error(exc) -> str:
    """``Type: message`` of an exception on one line of at most ~200 characters (for logs and
    stored errors that must not carry a traceback)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# --- masking ----------------------------------------------------------------------------------

#: 64 hex digits (an API key or session id), also as clients send keys: with dashes or spaces.
_HEX_TOKEN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f](?:(?:-|\+|%20| )?[0-9A-Fa-f]){63}(?![0-9A-Fa-f])")
#: A parameter whose name says it holds a credential, with ``=`` or its escape ``%3D`` (also in a path).
_SECRET_PARAM = re.compile(
    r"(?i)((?:auth|api|access|session|private)?[_.-]?(?:key|token|secret|passw(?:or)?d|pass|pwd|sid|esprit_id)"
    r"(?:=|%3D))[^&;/#\s]*")
MASK = "***"
#: The user and password of a URL (``http://user:pass@host/``, also scheme-relative ``//u:p@h/``).
_USERINFO = re.compile(r"(?i)((?:[a-z][a-z0-9+.-]*:)?//)[^/?#@\s]+@")


def mask_url(text: str) -> str:
    """``text`` (a URL or anything holding one) with credentials replaced by ``***``: every
    ``...key=``/``token=``/``password=``/``esprit_id=`` value (``=`` possibly escaped as ``%3D``,
    in the query or the path), every 64-hex token, dashed or not, and the user and password of
    a URL (``http://user:pass@host/``, as an absolute-form request target carries them)."""
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)
    return _HEX_TOKEN.sub(MASK, text)


_CONTROL_CHARACTERS = {code: "?" for code in (*range(32), 127)}


def masked_uri(uri: bytes) -> str:
    """``uri`` for the log with the value of every ``authkey`` parameter replaced by ``***``.

    Names are compared as the query parser sees them (percent-decoded), so ``%61uthkey=KEY``,
    which authenticates like ``authkey=KEY``, is masked too; then :func:`mask_url`
    hides keys sent under another name (``?key=``, ``?api_key=``, ``authkey%3D``, in the path).
    """
    text = uri.decode("ascii", "backslashreplace").translate(_CONTROL_CHARACTERS)  # no escapes into the log
    path, sep, query = text.partition("?")
    if not sep:
        return mask_url(path)
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and unquote_plus(name).strip().lower() == "authkey":
            part = name + "=***"
        parts.append(part)
    return mask_url(path + "?" + "&".join(parts))


# --- JSON lines --------------------------------------------------------------------------------

#: Field names that never go out as their own JSON field (secrets, or Twisted's internals).
_SECRET_NAME = re.compile(r"(?i)key|secret|passw|token|cookie|session|authori[sz]|credential|sid\b")
_SKIPPED = {"format", "message", "isError", "why", "failure", "time", "printed", "system"}
_PLAIN = (str, int, float, bool, type(None))
MAX_FIELD = 2000
#: Most characters of one log entry (message and traceback): a client's data never floods the log.
MAX_ENTRY = 4000
#: Seconds within which identical warnings and errors are counted instead of written again.
REPEAT_WINDOW = 60.0
#: Different warnings and errors remembered for that (the oldest is forgotten first).
MAX_REPEAT_KEYS = 256


def event_as_json(event: dict) -> str:
    """One log event as one line of JSON (see the module docstring); never raises."""
    when = datetime.datetime.fromtimestamp(event.get("log_time") or 0, datetime.timezone.utc)
    level = event.get("log_level")
    if level is None:
        level = LogLevel.error if event.get("isError") else LogLevel.info
    try:
        message = formatEvent(event)
    except Exception:  # formatEvent itself is defensive; this is belt and braces
        message = str(event.get("log_format"))
    out = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level.name,
        "namespace": event.get("log_namespace") or event.get("system") or "-",
        "message": bounded(mask_url(message)),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            out["traceback"] = bounded(mask_url(failure.getTraceback()))
        except Exception:
            out["traceback"] = bounded(mask_url(repr(failure)))
    for name, value in event.items():
        if name.startswith(("log_", "_")) or name in _SKIPPED or name in out or _SECRET_NAME.search(name):
            continue
        if isinstance(value, str):
            out[name] = mask_url(value[:MAX_FIELD])
        elif isinstance(value, _PLAIN):
            out[name] = value
    return json.dumps(out, ensure_ascii=False, default=str) + "\n"


def json_lines_observer(stream) -> FileLogObserver:
    """A Twisted observer writing :func:`event_as_json` lines to ``stream``."""
    return FileLogObserver(stream, event_as_json)


def bounded(text: str, limit: int = MAX_ENTRY) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (a log entry stays small
    whatever a client sent)."""
    if len(text) <= limit:
        return text
    ending = "\n" if text.endswith("\n") else ""
    return f"{text[:limit]} ... [{len(text) - limit} more characters not logged]{ending}"


def masked_text_observer(stream) -> FileLogObserver:
    """Twisted's classic text lines (traceback included) with :func:`mask_url` applied, as JSON
    has, each entry at most :data:`MAX_ENTRY` characters."""
    return FileLogObserver(stream, lambda event: bounded(mask_url(formatEventAsClassicLogText(event) or "")) or None)


class RepeatedErrors:
    """In front of an observer: a warning or error identical to one written less than
    :data:`REPEAT_WINDOW` seconds before (same namespace, level, text and failure) is counted,
    not written; the count is written once the window has passed (with the next warning or
    error).  Times are the events' own ``log_time``.  Any thread."""

    def __init__(self, observer, window: float = REPEAT_WINDOW):
        self._observer = observer
        self._window = window
        self._lock = threading.Lock()
        self._seen: dict = {}  # key -> [first time, repeats not written, namespace, text]

    def __call__(self, event: dict) -> None:
        level = event.get("log_level")
        if level is None or level < LogLevel.warn:
            self._observer(event)
            return
        now = event.get("log_time") or 0.0
        key = _repeat_key(event)
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self._window:
                entry[1] += 1
                return
            due = [self._seen.pop(k) for k, v in list(self._seen.items()) if now - v[0] >= self._window]
            if len(self._seen) >= MAX_REPEAT_KEYS:
                due.append(self._seen.pop(next(iter(self._seen))))
            self._seen[key] = [now, 0, event.get("log_namespace") or "-", key[2]]
        for _, repeats, namespace, text in due:
            if repeats:
                self._observer({"log_format": "the error {text!r} was repeated {repeats} more times (not logged)",
                                "text": text[:200], "repeats": repeats, "log_level": LogLevel.warn,
                                "log_namespace": namespace, "log_time": now, "log_system": "-"})
        self._observer(event)


def _repeat_key(event: dict) -> tuple:
    try:
        text = formatEvent(event)
    except Exception:
        text = str(event.get("log_format"))
    failure = event.get("log_failure")
    failed = f"{failure.type.__name__}: {failure.getErrorMessage()}"[:500] if failure is not None else ""
    return (event.get("log_namespace"), event.get("log_level"), text[:1000], failed)


# --- destination -------------------------------------------------------------------------------

class LogStream:
    """Where the log goes: ``path`` (appended to, reopened on SIGHUP) or stdout when None."""

    def __init__(self, path: Optional[str] = None, fallback: Optional[IO] = None):
        self.path = path
        self._fallback = fallback
        self._lock = threading.Lock()
        self._file: Optional[IO] = None
        self.reopen()

    def _open(self) -> IO:
        if self.path is None:
            return self._fallback or sys.stdout
        # 0600 whatever the umask: the log names accounts and addresses no site may read
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def reopen(self) -> None:
        """Close and open the file again (after logrotate moved it); stdout stays as it is."""
        new = self._open()
        with self._lock:
            old, self._file = self._file, new
        if old is not None and self.path is not None and old is not new:
            old.close()

    def write(self, text: str) -> None:
        with self._lock:
            self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()


def make_observer(config, stream) -> FilteringLogObserver:
    """The filtered observer ``[core] log_format`` and ``[core] debug`` ask for (``cp.debug``
    switches its level at run time, through the config's observers)."""
    if config.get("core", "log_format") == "json":
        observer = json_lines_observer(stream)
    else:
        observer = masked_text_observer(stream)
    predicate = LogLevelFilterPredicate(
        defaultLogLevel=LogLevel.debug if config.get("core", "debug") else LogLevel.info)

    def on_change(section, key, old, new):
        if (section, key) == ("core", "debug"):
            predicate.setLogLevelForNamespace(None, LogLevel.debug if new else LogLevel.info)

    config.observe(on_change)
    return FilteringLogObserver(RepeatedErrors(observer), [predicate])


def log_stream_for(config) -> LogStream:
    """The :class:`LogStream` of ``[core] log_file`` (relative to state_dir; empty: stdout)."""
    name = config.get("core", "log_file")
    return LogStream(config.state_path(name) if name else None)


def start_logging(config, stream=None) -> None:
    """Begin Twisted's global log to ``stream`` (default: ``[core] log_file`` or stdout), as
    ``[core] log_format`` says."""
    observer = make_observer(config, stream if stream is not None else log_stream_for(config))
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
