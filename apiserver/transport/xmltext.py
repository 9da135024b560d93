"""Text inside XML responses, the same for every dialect (SOAP, XML-RPC)."""

from __future__ import annotations

import re

#: Characters XML 1.0 cannot carry at all, even escaped.
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape_text(text: str) -> str:
    """Escape ``text`` for element content or a double-quoted attribute.

    Characters XML cannot carry become U+FFFD, so a stored value with a stray control
    character still reaches every client instead of breaking the whole response.
    """
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\r" in text:  # a literal CR would reach the client as LF (XML line-end normalisation)
        text = text.replace("\r", "&#13;")
    return NOT_XML.sub("\ufffd", text)
