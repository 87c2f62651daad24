"""What a printable resource is: its options with their allowed values, and its pages."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from conveyor.kinds.render.payload import RenderInputError

#: Printable area (mm) inside the page margins, by paper size: width, height.
PRINTABLE_MM = {"a4": (180.0, 257.0), "letter": (186.0, 239.0)}


@dataclass(frozen=True)
class Option:
    """A resource option: the values it accepts (JSON values) and the one used if absent."""

    values: tuple[Any, ...]
    default: Any

    def check(self, name: str, value: Any) -> Any:
        # `True == 1` in Python: compare types too, so `1` is not accepted for `true`.
        if not any(type(value) is type(v) and value == v for v in self.values):
            allowed = ", ".join(_show(v) for v in self.values)
            raise RenderInputError(
                f"option {name!r} does not allow {_show(value)}; allowed values: {allowed}"
            )
        return value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass(frozen=True)
class Page:
    """One page of a resource: the Jinja template that draws it and that template's data."""

    template: str
    data: dict[str, Any]


class Resource(ABC):
    """A printable resource. Subclasses declare `view`, `title`, `options` and `pages()`."""

    view: str
    title: str
    description: str
    options: dict[str, Option]

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Check the options of a task; return all of them with defaults filled in."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise RenderInputError(
                f"unknown option(s) {', '.join(unknown)} for resource {self.view!r};"
                f" its options are: {known}"
            )
        return {
            name: option.check(name, given[name]) if name in given else option.default
            for name, option in self.options.items()
        }

    @abstractmethod
    def pages(self, options: dict[str, Any], paper_size: str) -> list[Page]:
        """The pages of one copy."""

    def subtitle(self, options: dict[str, Any], paper_size: str) -> str:
        """Words for the file name, e.g. `modulo 10 - a4`; resources may say it better."""
        words = [f"{name.replace('_', ' ')} {_show(value)}" for name, value in options.items()]
        return " - ".join([*words, paper_size])

    def schema(self) -> dict[str, Any]:
        """The options as JSON Schema properties (for docs and `conveyor kinds`)."""
        return {
            name: {"enum": list(option.values), "default": option.default}
            for name, option in self.options.items()
        }
