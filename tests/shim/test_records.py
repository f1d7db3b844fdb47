"""shim.core.records: the dataclass stand-in on the node's hot path behaves like a dataclass."""

from __future__ import annotations

import pytest

from shim.core.records import FrozenInstanceError, factory, record


@record(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: list[str] = factory(list)


@record
class Box:
    items: list[int] = factory(list)


def test_init_defaults_eq_hash_repr():
    assert Point(1) == Point(x=1, y=0) != Point(1, 2)
    assert Point(1).tags == [] and Point(1).tags is not Point(1).tags  # a fresh list each
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    assert Point(1) != (1, 0, [])  # no tuple semantics


def test_wrong_arguments_are_type_errors():
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()
    with pytest.raises(TypeError):
        Point(1, x=2)
    with pytest.raises(TypeError):
        Point(1, z=2)
    with pytest.raises(TypeError):
        Point(1, 2, [], 4)


def test_frozen_refuses_assignment_mutable_is_unhashable():
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2
    with pytest.raises(AttributeError):
        del p.y
    b = Box()
    b.items = [1]
    assert b == Box([1])
    with pytest.raises(TypeError):
        hash(b)
