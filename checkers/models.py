"""Sequential specifications for the linearizability checker, as pure functions.

A model is an initial state and a ``step(state, f, arg, out) -> (legal, next_state)``
function, in the style of Porcupine's models. Ops reach a model as ``f`` (``"read"``,
``"write"`` or ``"cas"``), ``arg`` (the invocation's value: the value written, or
``(old, new)`` for ``cas``) and ``out`` (a read's returned value).

:data:`FREE` is a state meaning "any value": the state a window of a history starts in when
what came before it is not checked. The first op that observes the state binds it.

A read returning :class:`Siblings` (several concurrent versions, from a vector-clock store) is
never legal: a linearizable register holds one value at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class _Free:
    """The unknown state at the start of a checked window (see module docstring)."""

    _instance: _Free | None = None

    def __new__(cls) -> _Free:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "FREE"

    def __reduce__(self) -> str:
        return "FREE"


FREE = _Free()


@dataclass(frozen=True, slots=True)
class Siblings:
    """A read that returned several sibling values at once (vector-clock mode)."""

    values: tuple[Any, ...]


def register_step(state: Any, f: str, arg: Any, out: Any) -> tuple[bool, Any]:
    """Read/write register: a read must return the current value; a write replaces it."""
    if f == "read":
        if isinstance(out, Siblings):
            return False, state
        if state is FREE:
            return True, out
        return out == state, state
    if f == "write":
        return True, arg
    return False, state


def cas_register_step(state: Any, f: str, arg: Any, out: Any) -> tuple[bool, Any]:
    """Compare-and-set register: as :func:`register_step`, plus ``cas`` with ``arg=(old, new)``
    which is legal only when the current value is ``old`` (a failed cas is recorded as ``fail``
    and never reaches the model)."""
    if f == "cas":
        old, new = arg
        if state is FREE or state == old:
            return True, new
        return False, state
    return register_step(state, f, arg, out)


@dataclass(frozen=True, slots=True)
class Model:
    """A named sequential specification: the ops it accepts, its initial state and its step."""

    name: str
    fs: frozenset[str]
    init: Any
    step: Callable[[Any, str, Any, Any], tuple[bool, Any]]
    #: ``observer(f, arg)``: the op never changes a bound state — wherever it is legal it
    #: leaves the state as it was (a read; a cas of a value to itself). The search may
    #: linearize such an op as soon as it is legal, without trying it anywhere later.
    observer: Callable[[str, Any], bool]


def register_observer(f: str, arg: Any) -> bool:
    """Reads observe; writes change the state."""
    return f == "read"


def cas_register_observer(f: str, arg: Any) -> bool:
    """Reads observe, and so does a cas that writes back the value it expects."""
    return f == "read" or (f == "cas" and arg[0] == arg[1])


REGISTER = Model("register", frozenset({"read", "write"}), None, register_step,
                 register_observer)
CAS_REGISTER = Model("cas-register", frozenset({"read", "write", "cas"}), None, cas_register_step,
                     cas_register_observer)

MODELS: dict[str, Model] = {m.name: m for m in (REGISTER, CAS_REGISTER)}


def get_model(name: str) -> Model:
    """The model called ``name``; raises ``KeyError`` listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})") from None
