"""The public API says what it takes: every type in a public signature is importable from it."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import attrs

import meigen_async
from meigen_async import errors

Signed = Callable[..., Any]


def _signed(cls: type) -> Iterator[tuple[str, Signed | type]]:
    """A class's constructor (its attrs fields, for an attrs class) and its public members."""
    name = cls.__name__
    yield name, cls if attrs.has(cls) else cls.__init__
    for attribute, member in inspect.getmembers(cls):
        if attribute.startswith("_"):
            continue
        if isinstance(member, property) and member.fget is not None:
            yield f"{name}.{attribute}", member.fget
        elif inspect.isfunction(member) or inspect.ismethod(member):
            yield f"{name}.{attribute}", member


def public_callables() -> Iterator[tuple[str, Signed | type]]:
    """Every public callable of `meigen_async`, named: functions, classes and their members."""
    for name in meigen_async.__all__:
        exported = getattr(meigen_async, name)
        if inspect.isclass(exported):
            yield from _signed(exported)
        elif callable(exported):
            yield name, exported


def hints(signed: Signed | type) -> dict[str, Any]:
    """Its annotations resolved, each name looked up where it was written."""
    namespace = dict(vars(meigen_async))
    if isinstance(signed, type):  # an attrs class: its fields
        return typing.get_type_hints(signed, localns=namespace)
    return typing.get_type_hints(signed, localns=namespace)


def types_in(hint: Any) -> Iterator[type]:
    """Every class an annotation names, in unions and generic arguments too."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return
    if origin is not None:
        if isinstance(origin, type) and origin not in (types.UnionType,):
            yield origin
        for argument in typing.get_args(hint):
            yield from types_in(argument)
    elif isinstance(hint, type):
        yield hint
    elif isinstance(hint, list):  # the argument list of a Callable
        for argument in hint:
            yield from types_in(argument)


def test_the_walk_finds_the_constructor_and_its_types() -> None:
    found = dict(public_callables())
    named = {t for hint in hints(found["GallerySession"]).values() for t in types_in(hint)}
    assert {meigen_async.MemoryCache, meigen_async.SharedCache, meigen_async.Pacer} <= named
    assert collections.abc.Iterable in named


def test_every_type_in_a_public_signature_is_importable_from_the_package() -> None:
    private = set()
    for where, signed in public_callables():
        for hint in hints(signed).values():
            for kind in types_in(hint):
                ours = kind.__module__.split(".")[0] == "meigen_async"
                if ours and getattr(meigen_async, kind.__name__, None) is not kind:
                    private.add(f"{where}: {kind.__module__}.{kind.__qualname__}")
    assert sorted(private) == []


def test_every_error_is_importable_from_the_package() -> None:
    missing = [name for name in errors.__all__ if getattr(meigen_async, name, None) is None]
    assert missing == []
