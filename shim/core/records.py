"""Small data classes for the node's hot path, without `dataclasses`.

`import dataclasses` pulls in inspect, ast, dis and tokenize: several milliseconds on every
container create (floxk-runc runs once per container, as a fresh process). The classes on
that path (NodeConfig, EnvRef, FloxAnnotations, HubRecord, RealizedEnv, RuncCall) need only
what `record` gives: a keyword/positional __init__ from the annotated fields and their
defaults, __eq__, __repr__, and for frozen ones no assignment and a __hash__.

    @record(frozen=True)
    class Point:
        x: int
        tags: list[str] = factory(list)   # a fresh list per instance
"""

from __future__ import annotations

_MISSING = object()


class _Factory:
    """A default built anew for every instance (dataclasses' default_factory)."""

    __slots__ = ("make",)

    def __init__(self, make) -> None:
        self.make = make


# For type checkers only (the hot path imports no typing): `record` makes dataclass-like
# classes (PEP 681's dataclass_transform), and `factory(make)` is a default of make's type.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar, dataclass_transform

    _T = TypeVar("_T")

    def factory(make: Callable[[], _T], /) -> _T: ...
else:
    factory = _Factory

    def dataclass_transform(**_kwargs):
        return lambda decorator: decorator


def fields(obj) -> dict:
    """A record's fields by name, in order (dataclasses.asdict, not recursive)."""
    return {name: getattr(obj, name) for name in obj.__match_args__}


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


@dataclass_transform()
def record(cls=None, *, frozen: bool = False):
    """Class decorator: fields are the class's annotations, in order (see the module doc)."""

    def wrap(cls):
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = {}
        for name in names:
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
                if isinstance(defaults[name], _Factory):
                    delattr(cls, name)  # not a class attribute: each instance gets its own
        set_field = object.__setattr__

        def __init__(self, *args, **kwargs):
            if len(args) > len(names):
                raise TypeError(f"{cls.__name__}() takes at most {len(names)} arguments")
            values = dict(zip(names, args, strict=False))
            for key, value in kwargs.items():
                if key not in names or key in values:
                    raise TypeError(f"{cls.__name__}() got an unexpected or repeated {key!r}")
                values[key] = value
            for name in names:
                if name in values:
                    value = values[name]
                else:
                    value = defaults.get(name, _MISSING)
                    if value is _MISSING:
                        raise TypeError(f"{cls.__name__}() missing argument {name!r}")
                    if isinstance(value, _Factory):
                        value = value.make()
                set_field(self, name, value)

        def _values(self):
            return tuple(getattr(self, name) for name in names)

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return _values(self) == _values(other)

        def __repr__(self):
            fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
            return f"{cls.__qualname__}({fields})"

        cls.__init__ = __init__
        cls.__eq__ = __eq__
        cls.__repr__ = __repr__
        # mypy takes __match_args__ as fixed by the class statement; this is that statement.
        cls.__match_args__ = names  # type: ignore[misc]
        if frozen:

            def __setattr__(self, name, value):
                raise FrozenInstanceError(f"cannot assign to field {name!r}")

            def __delattr__(self, name):
                raise FrozenInstanceError(f"cannot delete field {name!r}")

            cls.__setattr__ = __setattr__
            cls.__delattr__ = __delattr__
            cls.__hash__ = lambda self: hash(_values(self))
        else:
            cls.__hash__ = None  # mutable and comparable: unhashable, like a dataclass
        return cls

    return wrap if cls is None else wrap(cls)
