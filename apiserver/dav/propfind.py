"""Our own answer to the common ``PROPFIND``: Depth 0 or 1, allprop or a ``<prop>`` of live and
dead properties, written as text from one listing of the folder.

Blocking: runs on a DAV thread, as the account (:mod:`apiserver.dav.wsgi`).

WsgiDAV builds an lxml tree of about 30 elements per member and asks each member's resource
for every property through several layers (a folder of 1,000 files: about 50 ms of a
request's CPU).  Here the folder is opened once (``O_NOFOLLOW``, checked inside the home) and
listed with ``fstatat`` on that descriptor; each plain member's answer is a few formatted
strings.  A member with dead properties or locks, and the resource asked for itself, are
answered by WsgiDAV's own code (:func:`_wsgidav_response`), so their values are exactly
WsgiDAV's; the folder's dead properties are one storage query and the site's locks one more
(:class:`apiserver.dav.state.DavState` keeps them for the request).

Anything else (Depth infinity, ``<propname/>``, ``<include>``, conditional headers, a body that
is not one of the two forms, an unusual name, any error) returns None and WsgiDAV answers as
before, with the body it would have read.
"""

from __future__ import annotations

import io
import os
import re
import stat
from typing import Optional
from urllib.parse import quote

from lxml import etree
from wsgidav import util, xml_tools

#: Request bodies read here at most; a larger one is left to WsgiDAV unread.
MAX_BODY = 64 * 1024
#: Live properties written here (names in the DAV: namespace); any other DAV: name goes to WsgiDAV.
LIVE = frozenset({"resourcetype", "getcontentlength", "getlastmodified", "creationdate", "getetag",
                  "getcontenttype", "displayname", "supportedlock", "lockdiscovery"})
#: Request headers that WsgiDAV evaluates for PROPFIND (If, If-Match...): such requests go to it.
CONDITIONS = ("HTTP_IF", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
              "HTTP_IF_UNMODIFIED_SINCE")
#: WsgiDAV's safe characters of an href (``_DAVResource.get_href``).
HREF_SAFE = "/" + "!*'()," + "$-_|."
#: Characters XML 1.0 cannot carry (lxml refuses them): such a name is left to WsgiDAV.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

OK, NOT_FOUND = "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"
SUPPORTED_LOCK = ("<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>"
                  "</D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype>"
                  "<D:write/></D:locktype></D:lockentry></D:supportedlock>")
FILE_PROPS = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype", "getlastmodified",
              "displayname", "getetag", "lockdiscovery", "supportedlock")
FOLDER_PROPS = ("resourcetype", "creationdate", "getlastmodified", "displayname", "lockdiscovery", "supportedlock")
#: A name that ``quote`` leaves as it is, with or without WsgiDAV's extra safe characters.
PLAIN_NAME = re.compile("[A-Za-z0-9_.~-]+").fullmatch
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


class Fallback(Exception):
    """This request is not one of the common forms: WsgiDAV answers it."""


def escape(text: str) -> str:
    """XML text as lxml writes it (``\\r`` too, which a parser would turn into ``\\n``)."""
    if "&" in text or "<" in text or ">" in text or "\r" in text:
        return text.translate(_ESCAPES)
    return text


def attribute(text: str) -> str:
    """XML attribute text (in double quotes)."""
    return escape(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def read_request(environ: dict):
    """``(mode, names)`` of the PROPFIND body: ``("allprop", None)`` or ``("named", [clark names])``;
    :class:`Fallback` otherwise.  The body read is put back for WsgiDAV."""
    length = environ.get("CONTENT_LENGTH", "").strip()
    if length in ("", "0"):
        return "allprop", None
    try:
        size = int(length)
    except ValueError:
        raise Fallback() from None
    if size < 0 or size > MAX_BODY:
        raise Fallback()
    body = environ["wsgi.input"].read(size)
    environ["wsgi.input"] = io.BytesIO(body)  # WsgiDAV reads it again if it answers
    environ["wsgidav.all_input_read"] = 1
    try:
        root = etree.XML(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.Error:
        raise Fallback() from None
    children = [child for child in root if isinstance(child.tag, str)]
    if root.tag != "{DAV:}propfind" or len(children) != 1 or len(root) != len(children):
        raise Fallback()
    (child,) = children
    if child.tag == "{DAV:}allprop" and len(child) == 0:
        return "allprop", None
    if child.tag != "{DAV:}prop":
        raise Fallback()
    names = []
    for prop in child:
        tag = prop.tag
        if not isinstance(tag, str) or not tag.startswith("{") or tag.startswith("{}"):
            raise Fallback()
        ns, local = tag[1:].split("}", 1)
        if ns == "DAV:" and local not in LIVE:
            raise Fallback()
        names.append(tag)
    if not names:
        raise Fallback()
    return "named", names


class Writer:
    """The multistatus of one request: plain members written here, the others by WsgiDAV."""

    def __init__(self, provider, environ: dict, mode: str, names: Optional[list]):
        self.provider = provider
        self.environ = environ
        self.mode, self.names = mode, names
        self.config = environ["wsgidav.config"]
        self.href_prefix = provider.mount_path + provider.share_path
        self._dates: dict = {}
        self._types: dict = {}
        self.parts: list = []

    # --- values, made once per distinct input --------------------------------------------------
    def date_pair(self, ctime: int, mtime: int) -> tuple:
        dates = self._dates
        created = dates.get(("c", ctime))
        if created is None:
            created = dates[("c", ctime)] = util.get_rfc3339_time(ctime)
        modified = dates.get(("m", mtime))
        if modified is None:
            modified = dates[("m", mtime)] = util.get_rfc1123_time(mtime)
        return created, modified

    def content_type(self, name: str) -> str:
        """WsgiDAV's guess (``mimetypes`` reads only the suffixes), escaped: cached per suffixes."""
        dot = name.find(".", 1)
        if dot < 0:
            return escape(util.guess_mime_type("/" + name, self.config))
        key = name[dot:]
        found = self._types.get(key)
        if found is None:
            found = self._types[key] = escape(util.guess_mime_type("/x" + key, self.config))
        return found

    # --- one plain member -----------------------------------------------------------------------
    def plain(self, href: str, name: str, info: os.stat_result, folder: bool) -> None:
        """The response of a member without dead properties or locks (``href`` quoted: nothing in
        it needs XML escaping)."""
        created, modified = self.date_pair(int(info.st_ctime), int(info.st_mtime))
        values = {"resourcetype": "<D:resourcetype><D:collection/></D:resourcetype>" if folder
                  else "<D:resourcetype></D:resourcetype>",
                  "creationdate": f"<D:creationdate>{created}</D:creationdate>",
                  "getlastmodified": f"<D:getlastmodified>{modified}</D:getlastmodified>",
                  "displayname": f"<D:displayname>{escape(name)}</D:displayname>",
                  "lockdiscovery": "<D:lockdiscovery/>",
                  "supportedlock": SUPPORTED_LOCK}
        if not folder:
            size = info.st_size
            values["getcontentlength"] = f"<D:getcontentlength>{size}</D:getcontentlength>"
            values["getcontenttype"] = f"<D:getcontenttype>{self.content_type(name)}</D:getcontenttype>"
            values["getetag"] = f"<D:getetag>{info.st_ino}-{int(info.st_mtime)}-{size}</D:getetag>"
        parts = self.parts
        parts.append(f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>")
        if self.mode == "allprop":
            parts.extend(values[key] for key in (FOLDER_PROPS if folder else FILE_PROPS))
            parts.append(f"</D:prop><D:status>{OK}</D:status></D:propstat></D:response>")
            return
        missing = []
        for tag in self.names:
            ns, local = tag[1:].split("}", 1)
            value = values.get(local) if ns == "DAV:" else None
            if value is None:
                missing.append((ns, local))
            else:
                parts.append(value)
        parts.append(f"</D:prop><D:status>{OK}</D:status></D:propstat>")
        if missing:
            parts.append("<D:propstat><D:prop>")
            for ns, local in missing:
                parts.append(f"<D:{local}/>" if ns == "DAV:" else f'<X:{local} xmlns:X="{attribute(ns)}"/>')
            parts.append(f"</D:prop><D:status>{NOT_FOUND}</D:status></D:propstat>")
        parts.append("</D:response>")

    def wsgidav(self, res) -> None:
        """The response WsgiDAV writes for ``res`` (dead properties, locks, the resource asked for)."""
        self.parts.append(_wsgidav_response(res, self.mode, self.names))

    def body(self) -> bytes:
        return ("<?xml version='1.0' encoding='UTF-8'?>\n<D:multistatus xmlns:D=\"DAV:\">" + "".join(self.parts)
                + "</D:multistatus>").encode("utf-8")


def _wsgidav_response(res, mode: str, names: Optional[list]) -> str:
    """WsgiDAV's ``<response>`` of one resource, as text (its own namespace declarations)."""
    multistatus = xml_tools.make_multistatus_el()
    props = res.get_properties(mode, name_list=names) if mode == "named" else res.get_properties(mode)
    util.add_property_response(multistatus, res.get_href(), props)
    return etree.tostring(multistatus[0], encoding="unicode")


def answer(provider, environ: dict, start_response) -> Optional[list]:
    """Blocking.  The 207 answer of a common PROPFIND, or None when WsgiDAV must answer.

    ``provider``: a :class:`apiserver.dav.provider.HomeProvider` (``check_inside(fd)`` raises when
    the open folder ``fd`` is not inside the home, ``listed(fd)`` lists its members with their ``lstat``,
    ``member_of(folder, name, info)`` is WsgiDAV's resource of a member)."""
    depth = environ.get("HTTP_DEPTH")
    if depth not in ("0", "1") or any(key in environ for key in CONDITIONS):
        return None
    lock_manager, prop_manager = provider.lock_manager, provider.prop_manager
    if lock_manager is None or prop_manager is None:
        return None
    try:
        mode, names = read_request(environ)
        res = provider.get_resource_inst(environ["PATH_INFO"], environ)
        if res is None:
            return None
        writer = Writer(provider, environ, mode, names)
        writer.wsgidav(res)
        if depth == "1" and res.is_collection:
            _members(writer, res)
        body = writer.body()
    except Exception:  # noqa: BLE001 - anything unusual: WsgiDAV answers (and reports) it
        return None
    start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                        ("Date", util.get_rfc1123_time()), ("Content-Length", str(len(body)))])
    return [body]


def _members(writer: Writer, folder) -> None:
    """Every member of ``folder`` from one listing of its checked descriptor."""
    provider, environ = writer.provider, writer.environ
    lock_manager, prop_manager = provider.lock_manager, provider.prop_manager
    fd = os.open(folder._file_path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        provider.check_inside(fd)
        entries = [(entry.name, info) for entry, info in provider.listed(fd)]
    finally:
        os.close(fd)
    # Most folders have no dead properties and no locks: then no member is asked about them.
    state, scope = getattr(prop_manager, "state", None), getattr(prop_manager, "scope", None)
    folder_ref = quote(provider.share_path + folder.get_preferred_path())
    check = True
    if state is not None and scope is not None:
        check = bool(state.folder_properties(scope.site_id, scope.to_site(folder_ref))
                     or state.live_locks(scope))
    href_folder = quote(writer.href_prefix + folder.get_preferred_path(), safe=HREF_SAFE)
    for name, info in entries:
        is_folder = stat.S_ISDIR(info.st_mode)
        if not is_folder and not stat.S_ISREG(info.st_mode):
            continue
        slash = "/" if is_folder else ""
        if PLAIN_NAME(name):  # quoted as it is (both ways)
            href, ref = href_folder + name + slash, folder_ref + name + slash
        else:
            if NOT_XML.search(name):
                raise Fallback()
            href = href_folder + quote(name, safe=HREF_SAFE) + slash
            ref = folder_ref + quote(name) + slash
        if check and (prop_manager.get_properties(ref, environ) or lock_manager.get_url_lock_list(ref)):
            writer.wsgidav(provider.member_of(folder, name, info))
        else:
            writer.plain(href, name, info, is_folder)
