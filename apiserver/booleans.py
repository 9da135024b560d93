"""The one reader of boolean text, for every place a true/false arrives as text.

Two vocabularies: :data:`XSD_BOOLEAN` is what XML Schema's ``xsd:boolean`` and XML-RPC's ``<boolean>``
allow (``true``/``1``, ``false``/``0``); :data:`BOOLEAN_WORDS` adds the words people type into
config.ini and cpcmd (``yes``/``on``, ``no``/``off``).  Case and surrounding white space are
ignored.  No project imports.
"""

from __future__ import annotations

from typing import Optional

#: ``(true words, false words)`` of xsd:boolean and XML-RPC.
XSD_BOOLEAN = (frozenset({"true", "1"}), frozenset({"false", "0"}))
#: ``(true words, false words)`` of config.ini and typed module arguments.
BOOLEAN_WORDS = (frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"}))


def parse_boolean(text: str, vocabulary: tuple = BOOLEAN_WORDS) -> Optional[bool]:
    """True or False for a word of ``vocabulary`` (case-insensitive, white space ignored), None
    for any other text: the caller says what it expected."""
    word = text.strip().lower()
    if word in vocabulary[0]:
        return True
    if word in vocabulary[1]:
        return False
    return None
