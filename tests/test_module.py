"""Module declarations: type hints and roles become FunctionSpecs, mistakes are named."""

import dataclasses
from typing import Optional

import pytest

from apiserver.module import Module, Role, export
from apiserver.types import ARRAY, BOOLEAN, INT, MAP, STRING, STRUCT


@dataclasses.dataclass
class Pair:
    key: str
    value: Optional[int]


class Sample(Module):
    """A module using every supported type."""

    name = "sample"

    @export(Role.ADMIN | Role.SITE)
    def do_thing(self, ctx, text: str, count: int, flag: bool = False, opts: Optional[dict] = None) -> list[Pair]:
        """Do a thing.

        More text.
        """
        return []

    @export(Role.ALL, blocking=False)
    async def ping(self, ctx) -> bool:
        """Answer true."""
        return True

    def not_exported(self, ctx) -> int:
        return 1


def test_functions_derive_from_hints():
    """Each exported method becomes a FunctionSpec with typed params and names for every dialect."""
    by_name = {f.name: f for f in Sample.functions()}
    assert set(by_name) == {"do_thing", "ping"}
    spec = by_name["do_thing"]
    assert spec.operation == "sample_do_thing" and spec.command == "sample:do-thing"
    assert [(p.name, p.spec.kind, p.required) for p in spec.params] == [
        ("text", STRING, True), ("count", INT, True), ("flag", BOOLEAN, False), ("opts", MAP, False)]
    assert spec.params[3].spec.nullable
    assert spec.returns.kind == ARRAY and spec.returns.item.kind == STRUCT
    assert spec.summary == "Do a thing."
    assert spec.signature() == (
        "sample:do-thing(string text, int count, boolean flag = false, map|null opts = null): list[Pair]")
    assert by_name["ping"].is_async and not by_name["ping"].blocking


@pytest.mark.parametrize("body, message", [
    ("def f(self, x: int) -> int: ...", r"take \(self, ctx"),
    ("def f(self, ctx, x) -> int: ...", "no type hint"),
    ("def f(self, ctx, x: int): ...", "missing return type"),
    ("def f(self, ctx, x: set) -> int: ...", "unsupported type hint"),
    ("def f(self, ctx, *x: int) -> int: ...", r"\*args"),
])
def test_bad_declarations_are_named(body, message):
    """A declaration the framework cannot expose fails with the function and the reason."""
    namespace = {}
    exec(body, {"Optional": Optional}, namespace)
    cls = type("Bad", (Module,), {"name": "bad", "f": export()(namespace["f"])})
    with pytest.raises(TypeError, match=message):
        cls.functions()


def test_module_name_must_have_no_underscore():
    """Module names cannot contain '_' since operations are split on the first one."""
    cls = type("Bad", (Module,), {"name": "my_mod", "f": export()(lambda self, ctx: None)})
    with pytest.raises(TypeError, match="lower-case identifier"):
        cls.functions()
