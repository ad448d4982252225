"""The tap extends singer-sdk through its public hooks only: no private or final SDK method is
overridden, so an SDK upgrade that reshapes its internals cannot silently bypass the tap."""

from __future__ import annotations

import inspect
import typing as t

import singer_sdk

import tap_whoop.streams.base
import tap_whoop.streams.endpoints
import tap_whoop.tap


def _tap_classes() -> list[type]:
    modules = (tap_whoop.tap, tap_whoop.streams.base, tap_whoop.streams.endpoints)
    return [
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__.startswith("tap_whoop.")
    ]


def _sdk_owner(cls: type, name: str) -> type | None:
    """The singer-sdk class `cls` inherits `name` from, if any."""
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("singer_sdk.") and name in vars(base):
            return base
    return None


def _is_final(member: t.Any) -> bool:
    target = member.fget if isinstance(member, property) else member
    return bool(getattr(target, "__final__", False))


def overridden_sdk_internals() -> list[str]:
    found = []
    for cls in _tap_classes():
        for name in vars(cls):
            owner = _sdk_owner(cls, name)
            if (
                owner is None
                or name == "_abc_impl"
                or (name.startswith("__") and name.endswith("__"))
            ):
                continue
            if name.startswith("_") or _is_final(vars(owner)[name]):
                found.append(f"{cls.__name__}.{name} (from {owner.__module__}.{owner.__name__})")
    return sorted(set(found))


def test_no_private_or_final_sdk_method_is_overridden() -> None:
    assert _tap_classes(), "the tap's classes were not found"
    assert overridden_sdk_internals() == []


def test_the_check_sees_an_override_of_a_private_sdk_method() -> None:
    class Leaky(singer_sdk.Stream):
        def _write_record_message(self, record: dict) -> None:  # the old profile override
            pass

    class Hooked(singer_sdk.Stream):
        def post_process(self, row: dict, context: t.Any = None) -> dict | None:
            return row

    assert _sdk_owner(Leaky, "_write_record_message") is singer_sdk.Stream
    assert _sdk_owner(Hooked, "post_process") is singer_sdk.Stream
    assert _is_final(vars(singer_sdk.Stream)["sync"]) is True
    assert _is_final(vars(singer_sdk.Stream)["get_records"]) is False
    finals = [name for name, member in vars(singer_sdk.Tap).items() if _is_final(member)]
    assert finals, "singer-sdk marks some Tap methods final; the check must see them"
