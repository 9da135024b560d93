"""The server's log: text lines or one JSON object per line, to stdout or ``[core] log_file``.

Text lines (the default) are Twisted's classic format.  ``[core] log_format=json`` writes one
object per line (no record separator) with ``time`` (ISO 8601, UTC), ``level``, ``namespace``,
``message`` (the rendered text), ``traceback`` for failures, and the event's own fields that
are plain values and whose names do not suggest a secret.  In both, :func:`mask_url` hides API
keys in logged URLs however they were sent, in messages and tracebacks alike.
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


def mask_url(text: str) -> str:
    """``text`` (a URL or anything holding one) with credentials replaced by ``***``: every
    ``...key=``/``token=``/``password=``/``esprit_id=`` value (``=`` possibly escaped as ``%3D``,
    in the query or the path) and every 64-hex token, dashed or not."""
    text = _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, text)
    return _HEX_TOKEN.sub(MASK, text)


# --- JSON lines --------------------------------------------------------------------------------

#: Field names that never go out as their own JSON field (secrets, or Twisted's internals).
_SECRET_NAME = re.compile(r"(?i)key|secret|passw|token|cookie|session|authori[sz]|credential|sid\b")
_SKIPPED = {"format", "message", "isError", "why", "failure", "time", "printed", "system"}
_PLAIN = (str, int, float, bool, type(None))
MAX_FIELD = 2000


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
        "message": mask_url(message),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            out["traceback"] = mask_url(failure.getTraceback())
        except Exception:
            out["traceback"] = mask_url(repr(failure))
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


def masked_text_observer(stream) -> FileLogObserver:
    """Twisted's classic text lines (traceback included) with :func:`mask_url` applied, as JSON has."""
    return FileLogObserver(stream, lambda event: mask_url(formatEventAsClassicLogText(event) or "") or None)


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
    return FilteringLogObserver(observer, [predicate])


def log_stream_for(config) -> LogStream:
    """The :class:`LogStream` of ``[core] log_file`` (relative to state_dir; empty: stdout)."""
    name = config.get("core", "log_file")
    return LogStream(config.state_path(name) if name else None)


def start_logging(config, stream=None) -> None:
    """Begin Twisted's global log to ``stream`` (default: ``[core] log_file`` or stdout), as
    ``[core] log_format`` says."""
    observer = make_observer(config, stream if stream is not None else log_stream_for(config))
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
