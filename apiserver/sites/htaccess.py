""".htaccess files read the way Apache 2.4 reads them, and the policy that makes Apache refuse
what the seed disables (symbolic links to other owners' files, server-side includes).

Apache's reading rules, from ``server/util.c`` and ``server/config.c``: a line ending in a
backslash continues on the next one (the backslash goes, nothing is inserted; a comment line
continues too), each line is trimmed, ``#`` starts a comment only as the first character of a
line, words are split like ``ap_getword_conf`` (single or double quotes group, ``\\`` escapes
the quote), directive names and option words are case-insensitive, and directives inside
sections (``<Files>``, ``<IfModule>``, ``<If>``, ``<Limit>``...) are read like any other.
``Options`` follows ``set_options`` of ``server/core.c``: a word that the ``Options=`` list of
``AllowOverride`` does not name is refused in every form (``+X``, ``-X`` and ``X``), and so is a
syntax error, both with HTTP 500 for every request below the file.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Iterable, Optional

from apiserver.errors import InvalidArgument
from apiserver.sites.home import DOCUMENT_ROOT, display_path, is_inside, open_inside, printable
from apiserver.sites.walk import walk_inside
from apiserver.sites.records import HtaccessFinding

ACCESS_FILE = ".htaccess"

#: Option bits of Apache's http_core.h.
OPT_INDEXES, OPT_INCLUDES, OPT_SYM_LINKS, OPT_EXECCGI = 1, 2, 4, 8
OPT_INC_WITH_EXEC, OPT_SYM_OWNER, OPT_MULTI = 32, 64, 128
OPT_ALL = OPT_INDEXES | OPT_INCLUDES | OPT_INC_WITH_EXEC | OPT_SYM_LINKS | OPT_EXECCGI  # not MULTI, SYM_OWNER

#: The option words of ``Options`` (and of ``AllowOverride Options=``), lower-cased.
OPTION_WORDS = {
    "indexes": OPT_INDEXES,
    "includes": OPT_INCLUDES | OPT_INC_WITH_EXEC,  # naming Includes also covers IncludesNOEXEC
    "includesnoexec": OPT_INCLUDES,
    "followsymlinks": OPT_SYM_LINKS,
    "symlinksifownermatch": OPT_SYM_OWNER,
    "execcgi": OPT_EXECCGI,
    "multiviews": OPT_MULTI,
    "runscripts": OPT_MULTI | OPT_EXECCGI,  # Apache's old alias
}

#: What the seed disables: following any link, and SSI (with or without exec).
REENABLING = OPT_SYM_LINKS | OPT_INCLUDES | OPT_INC_WITH_EXEC

#: The Options words .htaccess files may use, in any form.  Not FollowSymLinks, Includes or
#: IncludesNOEXEC: Apache then refuses them even as ``-X``, which is why check_tree warns.
ALLOWED_OPTIONS = ("Indexes", "MultiViews", "SymLinksIfOwnerMatch", "ExecCGI")
#: Override classes sites need: AuthConfig (passwords, DAV), FileInfo (mod_rewrite, AddType,
#: ErrorDocument, Header, PHP handlers), Indexes (DirectoryIndex, Expires*), Limit (Require...).
OVERRIDE_CLASSES = ("AuthConfig", "FileInfo", "Indexes", "Limit")
#: What the document roots themselves have: links only to the link owner's own files.
BASE_OPTIONS = ("SymLinksIfOwnerMatch",)

_ALLOWED_BITS = 0
for _word in ALLOWED_OPTIONS:
    _ALLOWED_BITS |= OPTION_WORDS[_word.lower()]

#: Bytes of one .htaccess read at most; Apache refuses longer lines anyway.
MAX_FILE_BYTES = 1 << 20
_DIRECTIVE_DISPLAY = 500


def apache_policy() -> str:
    """The directives for the sites' document-root ``<Directory>`` block.

    ``Options=`` lists what .htaccess may turn on or off; ``AllowOverrideList None`` adds no
    single directive beyond the classes.  The SSI switches of the FileInfo and Options classes
    (AddHandler, SetHandler, SetOutputFilter, AddOutputFilter, AddOutputFilterByType, XBitHack,
    FilterProvider) stay readable but do nothing: mod_include drops its INCLUDES filter wherever
    Options Includes is off, and no .htaccess can turn it on.
    """
    return "\n".join([
        f"AllowOverride {' '.join(OVERRIDE_CLASSES)} Options={','.join(ALLOWED_OPTIONS)}",
        "AllowOverrideList None",
        f"Options {' '.join(BASE_OPTIONS)}",
    ]) + "\n"


@dataclasses.dataclass
class Finding:
    """One directive worth reporting; ``refused`` when Apache answers an error for it (500)."""

    line: int
    directive: str
    reason: str
    refused: bool


# --- reading like Apache ----------------------------------------------------------------------

def logical_lines(data: bytes) -> Iterable[tuple[int, bytes]]:
    """``(first physical line, trimmed text)`` of every line Apache reads, continuations joined."""
    physical = data.split(b"\n")
    ended = [True] * (len(physical) - 1) + [False]  # the last piece has no newline after it
    if physical and physical[-1] == b"":
        physical.pop()
        ended.pop()
    buffer, start = b"", 0
    for number, (text, has_newline) in enumerate(zip(physical, ended), start=1):
        if not buffer:
            start = number
        if has_newline:
            body = text[:-1] if text.endswith(b"\r") else text
            if body.endswith(b"\\"):
                buffer += body[:-1]
                continue
        buffer += text
        yield start, buffer.strip()
        buffer = b""
    if buffer:
        yield start, buffer.strip()


#: C's isspace() in the C locale (Python's str.isspace knows more).
_SPACE = " \t\n\r\x0b\x0c"


def getword_conf(line: str) -> tuple[str, str]:
    """Apache's ``ap_getword_conf``: the first word of ``line`` (quotes group) and the rest."""
    i = 0
    while i < len(line) and line[i] in _SPACE:
        i += 1
    if i == len(line):
        return "", ""
    quote = line[i]
    out = []
    if quote in ("'", '"'):
        i += 1
        while i < len(line) and line[i] != quote:
            if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in (quote, "\\"):
                i += 1
            out.append(line[i])
            i += 1
        if i < len(line):
            i += 1  # the closing quote
    else:
        while i < len(line) and line[i] not in _SPACE:
            if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == "\\":
                i += 1
            out.append(line[i])
            i += 1
    while i < len(line) and line[i] in _SPACE:
        i += 1
    return "".join(out), line[i:]


def words(args: str) -> list[str]:
    """Every word of ``args`` as ``ap_getword_conf`` splits them (a quoted empty word counts)."""
    out, rest = [], args.lstrip(_SPACE)
    while rest:
        word, rest = getword_conf(rest)
        out.append(word)
    return out


def directives(data: bytes) -> Iterable[tuple[int, str, str, str]]:
    """``(line, name lower-cased, arguments, the line as written)`` for every directive,
    sections' own lines included (``<files``, ``</files``) and their contents alike."""
    for number, raw in logical_lines(data):
        if not raw or raw.startswith(b"#"):
            continue
        text = raw.decode("latin-1")  # byte for byte, as Apache compares
        name, args = getword_conf(text)
        if not name:
            continue
        if name[1:2] != "/" and name.endswith(">"):
            name = name[:-1]
        yield number, name.lower(), args, text


# --- what a directive does ----------------------------------------------------------------------

_NO_EFFECT = ("; it has no effect: mod_include drops the INCLUDES filter wherever Options Includes is "
              "off, and Apache refuses Options Includes here")


def _options(args: str) -> tuple[list[str], bool]:
    """Problems of an ``Options`` line under the policy, and whether Apache refuses it."""
    problems, refused = [], False
    first, merge, all_none = True, False, False
    for raw in words(args):
        word, action = raw, ""
        if word[:1] in ("+", "-"):
            action, word = word[0], word[1:]
            if not merge and not first and not all_none:
                problems.append("Apache answers 500: either all Options must start with + or -, or none may")
                refused = True
            merge = True
        elif not first and merge:
            problems.append("Apache answers 500: either all Options must start with + or -, or none may")
            refused = True
        lower = word.lower()
        if lower in ("none", "all"):
            if not first:
                problems.append(f"Apache answers 500: 'Options {word}' must be the first option given")
                refused = True
            elif action:
                problems.append(f"Apache answers 500: 'Options {action}{word}' is not valid")
                refused = True
            bits = 0 if lower == "none" else OPT_ALL
            all_none = True
        elif lower in OPTION_WORDS:
            bits = OPTION_WORDS[lower]
        else:
            note = " (unless Apache's configuration defines that variable)" if "${" in word else ""
            problems.append(f"Apache answers 500: illegal option {word!r}{note}")
            refused = True
            first = False
            continue
        if action != "-" and bits & REENABLING:
            problems.append(_turns_on(word, bits))
        if bits & ~_ALLOWED_BITS:
            refused = True
            if action == "-":
                problems.append(f"Apache answers 500: option {word} is not allowed here, not even to turn "
                                f"it off (it is off already: remove the word)")
            else:
                problems.append(f"Apache answers 500: option {word} is not allowed here")
        first = False
    return list(dict.fromkeys(problems)), refused


def _turns_on(word: str, bits: int) -> str:
    what = []
    if bits & OPT_SYM_LINKS:
        what.append("following symbolic links to any owner's files")
    if bits & (OPT_INCLUDES | OPT_INC_WITH_EXEC):
        what.append("server-side includes")
    return f"{word} turns on {' and '.join(what)}"


def _filters(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(";")]


def _rewrite_handler(args: str) -> Optional[str]:
    parts = words(args)
    if len(parts) < 3 or not (parts[2].startswith("[") and parts[2].endswith("]")):
        return None
    for flag in parts[2][1:-1].split(","):
        key, _, value = flag.strip().partition("=")
        if key.lower() in ("h", "handler"):
            return value.strip().lower()
    return None


def _ssi_switch(name: str, args: str) -> Optional[str]:
    """Why directive ``name`` turns SSI on, or None."""
    first = words(args)[:1]
    first = first[0] if first else ""
    if name == "xbithack" and first.lower() in ("on", "full"):
        return f"XBitHack {first} parses executable HTML files for SSI (Options override class)"
    if name in ("setoutputfilter", "addoutputfilter", "addoutputfilterbytype") and "includes" in _filters(first):
        return "sets the INCLUDES filter, which parses SSI (FileInfo override class)"
    if name in ("addhandler", "sethandler") and first.lower() == "server-parsed":
        return "sets the server-parsed handler, which parses SSI (FileInfo override class)"
    if name == "rewriterule" and _rewrite_handler(args) == "server-parsed":
        return "sets the server-parsed handler, which parses SSI (FileInfo override class)"
    if name == "filterprovider":
        parts = words(args)
        if len(parts) >= 2 and parts[1].lower() == "includes":
            return "makes INCLUDES a filter provider, which parses SSI (Options override class)"
    return None


def scan(data: bytes) -> list[Finding]:
    """Every directive of one .htaccess that re-enables what the policy disables, or that
    Apache refuses under it."""
    findings = []
    for number, name, args, text in directives(data):
        if name == "options":
            problems, refused = _options(args)
            if problems:
                findings.append(Finding(number, _display(text), "; ".join(problems), refused))
            continue
        why = _ssi_switch(name, args)
        if why:
            findings.append(Finding(number, _display(text), why + _NO_EFFECT, False))
    return findings


def _display(text: str) -> str:
    return printable(text.encode("latin-1").decode("utf-8", "replace"), _DIRECTIVE_DISPLAY)


# --- the tree -----------------------------------------------------------------------------------

def check_tree(home, site_path: str = DOCUMENT_ROOT) -> list[HtaccessFinding]:
    """Blocking.  Findings for every .htaccess at or under ``site_path`` of ``home``.

    Folder links are never followed (a link inside the home leads to a folder that is walked
    under its own path anyway); a .htaccess that links out of the home is reported, not read.
    """
    top = home.resolve(site_path, must_exist=True)
    root = home.real_root
    info = os.lstat(top)
    if stat.S_ISDIR(info.st_mode):
        candidates = _access_files(top, root)
    elif ACCESS_FILE in (os.path.basename(top), site_path.rstrip("/").rsplit("/", 1)[-1]):
        candidates = iter([(top, None)])
    else:
        raise InvalidArgument(f"{display_path(site_path)!r} is neither a folder nor a {ACCESS_FILE} file")
    out = []
    for path, error in candidates:
        shown = home.site_path(path)
        if error is not None:
            out.append(HtaccessFinding(shown, 1, "", f"folder cannot be read, its .htaccess files are not "
                                                      f"checked: {error}"))
            continue
        for finding in _check_file(path, root):
            out.append(HtaccessFinding(shown, finding.line, finding.directive, finding.reason))
    return out


def _access_files(top: str, root: str):
    """``(path, None)`` of each .htaccess under ``top`` (never leaving the home ``root``), ``(folder,
    error)`` for unreadable folders."""
    errors = []
    for folder in walk_inside(top, root, onerror=errors.append):
        while errors:
            error = errors.pop()
            yield os.path.join(top, error.rel) if error.rel else top, error.strerror
        if any(entry.name == ACCESS_FILE for entry in folder.entries):
            yield folder.child_path(ACCESS_FILE), None
        if ACCESS_FILE in folder.subfolders:
            folder.subfolders.remove(ACCESS_FILE)
        folder.subfolders.sort()
    while errors:
        error = errors.pop()
        yield os.path.join(top, error.rel) if error.rel else top, error.strerror


def _link_out() -> Finding:
    return Finding(1, "", "a symbolic link out of the site's home: Apache reads what it points to, "
                          "which is not checked here", False)


def _check_file(path: str, root: str) -> list[Finding]:
    """Blocking.  Findings of the .htaccess at host path ``path`` inside the home ``root``.

    Whether it lies inside the home is decided on the opened file (a folder swapped for a link
    meanwhile cannot make root read a file elsewhere); a link as the file itself is followed
    as Apache does, and reported when it leaves the home.
    """
    # A link is judged by where it leads on paper, its target never looked at: were an existing
    # target and a missing one answered differently, the check would tell whether any file exists.
    if os.path.islink(path) and not is_inside(os.path.realpath(path), root):
        return [_link_out()]
    try:
        fd = open_inside(path, root, os.O_RDONLY | os.O_NONBLOCK)
    except InvalidArgument:
        return [_link_out()]
    except OSError as exc:
        return [Finding(1, "", f"cannot be read: {exc.strerror}", False)]
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return [Finding(1, "", "not a regular file: Apache answers 403 for everything in this folder", True)]
    if info.st_nlink > 1:
        os.close(fd)
        return [Finding(1, "", "a file with other hard links (perhaps outside the site's home): not read; make it a "
                               "plain copy", False)]
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return [Finding(1, "", f"larger than {MAX_FILE_BYTES} bytes: not checked", False)]
    return scan(data)
