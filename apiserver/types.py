"""The value types a module function may take and return, derived once from its type hints.

A :class:`TypeSpec` is the one description every dialect works from: the document/literal and
RPC-encoded WSDL generators, the SOAP and XML-RPC codecs, ``cpcmd misc:info`` and argument
validation.  Supported hints:

=====================  ==========  =====================================================
hint                   kind        on the wire
=====================  ==========  =====================================================
``str``                string      xsd:string
``int``                int         xsd:long
``bool``               boolean     xsd:boolean
``float``              float       xsd:double
``Optional[X]``        X|null      nillable, minOccurs=0; ``xsi:nil`` in RPC style
``datetime``           datetime    xsd:dateTime
``list[X]``            array       a sequence of X (SOAP-ENC array in RPC style)
``dict``               map         free-form hash of name -> any value
``Any``                any         xsd:anyType, the value's type given by ``xsi:type``
a ``@dataclass``       struct      a complex type with one element per field
=====================  ==========  =====================================================
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
from typing import Any, Optional

from apiserver.booleans import parse_boolean
from apiserver.errors import InvalidArgument

STRING, INT, BOOLEAN, FLOAT, ARRAY, STRUCT, MAP, ANY, DATETIME = (
    "string", "int", "boolean", "float", "array", "struct", "map", "any", "datetime",
)

_SCALARS = {str: STRING, int: INT, bool: BOOLEAN, float: FLOAT, datetime.datetime: DATETIME}

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


@dataclasses.dataclass(frozen=True)
class TypeSpec:
    """One value type.  ``item`` is set for arrays, ``fields``/``record`` for structs."""

    kind: str
    nullable: bool = False
    item: Optional["TypeSpec"] = None
    fields: tuple = ()  # tuple[tuple[str, TypeSpec], ...]
    record: Optional[type] = None

    @property
    def name(self) -> str:
        """A short name for messages and WSDL type names (``string``, ``ApiKey``, ``ApiKeyArray``)."""
        if self.kind == STRUCT:
            return self.record.__name__
        if self.kind == ARRAY:
            return self.item.name[0].upper() + self.item.name[1:] + "Array"
        return self.kind

    def describe(self) -> str:
        """Human-readable type, as ``cpcmd misc:info`` shows it (``list[string]|null``)."""
        if self.kind == ARRAY:
            text = f"list[{self.item.describe()}]"
        elif self.kind == STRUCT:
            text = self.record.__name__
        else:
            text = self.kind
        return text + ("|null" if self.nullable else "")


def spec_from_hint(hint: Any) -> TypeSpec:
    """Turn a type hint into a :class:`TypeSpec`; raise ``TypeError`` for unsupported hints."""
    if hint is Any or hint is object:
        return TypeSpec(ANY, nullable=True)
    if hint is None or hint is type(None):
        return TypeSpec(ANY, nullable=True)
    origin = typing.get_origin(hint)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only Optional[X] unions are supported, not {hint!r}")
        return dataclasses.replace(spec_from_hint(args[0]), nullable=True)
    if origin in (list, typing.List, tuple) or hint in (list, tuple):
        args = typing.get_args(hint)
        item = spec_from_hint(args[0]) if args else TypeSpec(ANY, nullable=True)
        return TypeSpec(ARRAY, item=item)
    if origin in (dict, typing.Dict) or hint is dict:
        return TypeSpec(MAP)
    if hint in _SCALARS:
        return TypeSpec(_SCALARS[hint])
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = tuple((f.name, spec_from_hint(hints[f.name])) for f in dataclasses.fields(hint))
        return TypeSpec(STRUCT, fields=fields, record=hint)
    raise TypeError(f"unsupported type hint {hint!r}")


def coerce(value: Any, spec: TypeSpec, where: str, secret: bool = False) -> Any:
    """Check ``value`` against ``spec`` and convert loosely-typed input to it.

    Dialects without types (untyped RPC elements, cpcmd words) hand over strings; this turns
    ``"5"`` into ``5`` for an int and ``"true"`` into ``True`` for a boolean, and refuses
    anything that does not fit with :class:`InvalidArgument` naming ``where``.  With
    ``secret`` the refusal names the type it got instead of echoing the value.
    """
    if value is None:
        if spec.nullable or spec.kind == ANY:
            return None
        raise InvalidArgument(f"{where}: a value is required ({spec.describe()}), got null")
    kind = spec.kind
    try:
        if kind == STRING:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, bool):
                return "true" if value else "false"
        elif kind == INT:
            number = None
            if isinstance(value, int):  # bool included
                number = int(value)
            elif isinstance(value, float) and value.is_integer():
                number = int(value)
            elif isinstance(value, str):
                number = int(value.strip())
            if number is not None:
                if not INT64_MIN <= number <= INT64_MAX:  # xsd:long, and what databases store
                    raise InvalidArgument(f"{where}: {number} is out of range for a 64-bit integer")
                return number
        elif kind == BOOLEAN:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str):
                flag = parse_boolean(value) if value.strip() else False  # PHP sends false as ""
                if flag is not None:
                    return flag
        elif kind == FLOAT:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                return float(value.strip())
        elif kind == DATETIME:
            if isinstance(value, datetime.datetime):
                return value
            if isinstance(value, str):
                return datetime.datetime.fromisoformat(value.strip())
        elif kind == ARRAY:
            if isinstance(value, dict) and all(isinstance(k, int) or str(k).isdigit() for k in value):
                value = [value[k] for k in sorted(value, key=int)]  # PHP-style numbered hash
            if isinstance(value, (list, tuple)):
                return [coerce(v, spec.item, f"{where}[{i}]") for i, v in enumerate(value)]
            # A lone value where a list is expected: PHP and SOAP::Lite flatten one-element arrays.
            return [coerce(value, spec.item, f"{where}[0]")]
        elif kind == MAP:
            if isinstance(value, dict):
                return {str(k): v for k, v in value.items()}
            if value == "" or value == []:
                return {}
        elif kind == STRUCT:
            if dataclasses.is_dataclass(value) and isinstance(value, spec.record):
                return value
            if isinstance(value, dict):
                known = dict(spec.fields)
                unknown = set(value) - set(known)
                if unknown:
                    raise InvalidArgument(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
                kwargs = {}
                for fname, fspec in spec.fields:
                    kwargs[fname] = coerce(value.get(fname), fspec, f"{where}.{fname}")
                return spec.record(**kwargs)
        elif kind == ANY:
            return value
    except (ValueError, TypeError, OverflowError):
        pass
    got = f"a {type(value).__name__}" if secret else _show(value)
    raise InvalidArgument(f"{where}: expected {spec.describe()}, got {got}")


def to_plain(value: Any) -> Any:
    """Turn a return value into plain dicts/lists/scalars (records become dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
