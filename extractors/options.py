"""Options, each declared once, next to the code that reads it.

A model family's module declares the options its model reads; the engine declares the ones kinds of models share
(sampling, windows, crops, pooling, weights); ``extractors/config.py`` declares those of every run (inputs,
devices, outputs). The command line and its ``--help``, the refusal of an option a feature type does not read,
what a manifest records, ``--list_models``, the reference documentation and the option tests are all derived from
these declarations, so a new option is written in one place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping

from io_utils.errors import UsageError
from io_utils.sources import is_url


class Section:
    """``--help`` sections, in this order; a family may name a section of its own (listed after these)."""

    RECIPES = "presets and manifests"
    INPUTS = "inputs (exactly one)"
    SAMPLING = "sampling and windows"
    DEVICES = "devices"
    OUTPUTS = "outputs, views, crops and pooling"
    MODELS = "models and weights"
    ORDER = (RECIPES, INPUTS, SAMPLING, DEVICES, OUTPUTS, MODELS)


@dataclass(frozen=True)
class Option:
    """One option: ``--<name>`` on the command line, ``name=`` in the Python API.

    ``example``: a value other than the default (shown in the reference, and tried by the option tests).
    ``convert``: parses a value (a string from the command line, or a Python value) and raises ValueError for a
    bad one; ``choices``: the values allowed; ``many``: one or more values (a tuple). ``changes_features``:
    whether the features depend on it (then a manifest records it and refuses to mix values). ``required``: the
    feature types that read it cannot run without it. ``former``: earlier spellings, still accepted, of this
    option for the feature types that declare it so (see :meth:`formerly`). ``exclusive``: at most one option of
    that name's group may be given.
    """

    name: str
    default: Any
    help: str
    example: Any
    convert: Callable[[Any], Any] | None = None
    choices: tuple | None = None
    many: bool = False
    metavar: str | None = None
    section: str = Section.MODELS
    changes_features: bool = True
    required: bool = False
    former: tuple[str, ...] = ()
    exclusive: str | None = None

    @property
    def flag(self) -> bool:
        """A switch: given means True."""
        return self.default is False

    def formerly(self, *names: str) -> Option:
        """This option, also accepted under ``names`` by the feature types that read it in this form."""
        return replace(self, former=self.former + names)

    def same_as(self, other: Option) -> bool:
        """The same option, former spellings apart (several families may read one option)."""
        return replace(self, former=()) == replace(other, former=())

    def converted(self, value: Any) -> Any:
        """``value`` checked and converted as the command line would; a :class:`UsageError` naming the option."""
        if value is None:
            return None
        try:
            if self.many:
                value = tuple([value] if isinstance(value, (str, int, float)) else value)
                value = tuple(self.convert(item) for item in value) if self.convert else value
            elif self.convert is not None:
                value = self.convert(value)
        except (TypeError, ValueError) as error:
            raise UsageError(f"--{self.name} {value}: {error}") from None
        items = value if self.many else (value,)
        if self.choices is not None and any(item not in self.choices for item in items):
            raise UsageError(f"--{self.name} {value}: choose from {', '.join(map(str, self.choices))}")
        return value


class FrozenMapping(Mapping[str, Any]):
    """A read-only mapping that can be hashed and pickled: a run's option values (its configuration travels to
    worker processes and Ray actors), a weights table."""

    def __init__(self, values: Mapping[str, Any] | None = None):
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"


class OptionValues(FrozenMapping):
    """The values of a feature type's own options, by name."""

    def updated(self, values: Mapping[str, Any]) -> OptionValues:
        return OptionValues({**self, **values})


def positive_int(value: Any) -> int:
    number = int(value)
    if number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"must be a positive integer, got {value}")
    return number


def positive_float(value: Any) -> float:
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"must be a positive number, got {value}")
    return number


def non_negative_float(value: Any) -> float:
    number = float(value)
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f"must be a number >= 0, got {value}")
    return number


def local_folder(value: Any) -> str:
    """A folder an earlier run wrote, read where this one runs: a URL is refused (its objects would have to be
    copied for every video)."""
    if is_url(str(value)):
        raise ValueError(f"must be a local or shared folder, got the URL {value} (copy the folder there first)")
    return str(value)
