"""Declaring kinds: `@conveyor.task("name", input=Model, output=Model, ...)`.

A kind pairs a handler with pydantic input/output models and defaults (queue, attempts,
timeout, backoff). Workers import the modules that declare kinds and register each kind's
JSON Schemas in the store, so the API can validate input without importing worker code.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from pydantic import BaseModel

from conveyor import errors
from conveyor.limits import Concurrency, RateLimit, declare
from conveyor.models import JSON, KindInfo, Limit

if TYPE_CHECKING:
    from conveyor.schedules.declare import Declared
    from conveyor.schedules.model import NewSchedule

RunMode = Literal["async", "thread", "process"]


@dataclass(frozen=True)
class KindSpec:
    """A declared kind: its handler and defaults."""

    name: str
    handler: Callable[..., Any]
    input_model: type[BaseModel] | None = None
    output_model: type[BaseModel] | None = None
    queue: str = "default"
    max_attempts: int = 3
    timeout_s: float | None = None
    backoff_s: float = 1.0
    description: str = ""
    examples: tuple[JSON, ...] = field(default_factory=tuple)
    schedules: tuple[NewSchedule, ...] = field(default_factory=tuple)
    limits: tuple[Limit, ...] = field(default_factory=tuple)
    concurrency_key: str | None = None
    continuation: Callable[..., Any] | None = None
    """Called as `continuation(input, children, ctx)` when the children a job spawned have
    ended (see worker/continuation.py)."""
    slots: int | None = None
    """An async kind's jobs one child runs at once (None: its share of the worker's slots)."""
    threads: int | None = None
    """A sync kind's thread pool per child: it runs this many jobs at once (None: none, one
    job per child process)."""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    @property
    def runs(self) -> RunMode:
        """How a child runs this kind: `async` (many at once on its event loop), `thread` (many
        at once on a thread pool) or `process` (alone in its child process)."""
        if self.is_async:
            return "async"
        return "thread" if self.threads else "process"

    def info(self) -> KindInfo:
        """What the store keeps about this kind (JSON Schemas, defaults)."""
        return KindInfo(
            name=self.name,
            queue=self.queue,
            description=self.description,
            input_schema=_schema(self.input_model),
            output_schema=_schema(self.output_model),
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            backoff_s=self.backoff_s,
            examples=list(self.examples),
            concurrency_key=self.concurrency_key,
            limits=list(self.limits),
        )


def _schema(model: type[BaseModel] | None) -> dict[str, Any]:
    return {} if model is None else model.model_json_schema()


class Registry:
    """Kind name → KindSpec."""

    def __init__(self) -> None:
        self._kinds: dict[str, KindSpec] = {}
        self._schedules: dict[str, NewSchedule] = {}

    def add(self, spec: KindSpec) -> None:
        known = self._kinds.get(spec.name)
        if known is not None and _qualname(known.handler) != _qualname(spec.handler):
            raise errors.ConfigurationError(
                f"kind {spec.name!r} is declared twice: by {_qualname(known.handler)} and"
                f" by {_qualname(spec.handler)}"
            )
        for declared in spec.schedules:
            self.add_schedule(declared, owner=spec.name)
        self._kinds[spec.name] = spec

    def set_continuation(self, name: str, fn: Callable[..., Any]) -> None:
        """Declare the continuation of kind `name` (`@kind.continuation`)."""
        self._kinds[name] = replace(self.get(name), continuation=fn)

    def add_schedule(self, schedule: NewSchedule, owner: str | None = None) -> None:
        """Declare a schedule; one id declared twice differently is a configuration error."""
        known = self._schedules.get(schedule.id)
        if known is not None and known != schedule:
            where = f" (on kind {owner!r})" if owner else ""
            raise errors.ConfigurationError(
                f"schedule {schedule.id!r}{where} is declared twice, differently; give each"
                " schedule its own id"
            )
        self._schedules[schedule.id] = schedule

    def schedules(self) -> list[NewSchedule]:
        """The schedules declared in code, on kinds or on their own, by id."""
        return [self._schedules[key] for key in sorted(self._schedules)]

    def get(self, name: str) -> KindSpec:
        try:
            return self._kinds[name]
        except KeyError:
            raise errors.KindNotFoundError(
                f"this worker does not know the kind {name!r}", kind=name
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Any:
        return iter(sorted(self._kinds.values(), key=lambda k: k.name))

    def infos(self) -> list[KindInfo]:
        return [spec.info() for spec in self]


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


registry = Registry()
"""The process-wide registry that `@task` adds to."""

F = TypeVar("F", bound=Callable[..., Any])


class Task(Protocol):
    """What `@conveyor.task` returns: the handler, callable as before, plus `continuation`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def continuation(self, fn: F) -> F:
        """Declare the function a job of this kind resumes with once the children it spawned
        (`ctx.spawn`, then `return ctx.wait_for_children(state)`) have all ended. Called as
        `fn(input, children, ctx)`: the job's input, a `conveyor.Children` (their outcomes in
        spawn order, and `children.state`) and a fresh context; sync or `async def`. It
        returns the job's result, raises (a retry runs the continuation again), or spawns and
        waits again."""
        ...


def task(
    name: str,
    *,
    input: type[BaseModel] | None = None,
    output: type[BaseModel] | None = None,
    queue: str = "default",
    max_attempts: int = 3,
    timeout: float | None = None,
    retry_backoff: float = 1.0,
    description: str | None = None,
    examples: Iterable[JSON] = (),
    schedules: Iterable[Declared] = (),
    concurrency: Concurrency | int | None = None,
    rate_limit: RateLimit | None = None,
    slots: int | None = None,
    threads: int | None = None,
) -> Callable[[Callable[..., Any]], Task]:
    """Declare a kind. The handler is called as `handler(input, ctx)`.

    `input` is an instance of the input model (or the raw JSON when no model is given);
    the handler returns an instance of the output model, a dict, or any JSON value. Sync and
    `async def` handlers are both supported. A handler that raises fails its attempt; it is
    retried with exponential backoff (base `retry_backoff` seconds) until `max_attempts`.
    `schedules` (`conveyor.Cron(...)`, `conveyor.Every(...)`) submit the kind on a schedule;
    `concurrency` (`conveyor.Concurrency(...)` or a number) and `rate_limit`
    (`conveyor.RateLimit(...)`) limit how many run at once and start per period, on all hosts
    together, per concurrency key when they name one (`key="input.tenant"`).

    How a worker child runs the kind's jobs (see "Three ways a kind runs" in the concepts):
    an `async def` handler runs beside other jobs on the child's event loop, up to `slots` at
    once per child (default: the worker's `--slots` shared out over its children); a sync
    handler with `threads=N` runs on a pool of N threads per child; any other sync handler
    runs alone in its child process.
    """
    bound = tuple(declared.bind(name) for declared in schedules)
    for what, value in (("slots", slots), ("threads", threads)):
        if value is not None and value < 1:
            raise errors.ConfigurationError(f"kind {name!r}: {what} must be at least 1")
    limits, key_source = declare(name, concurrency, rate_limit)

    def decorate(handler: Callable[..., Any]) -> Task:
        doc = inspect.getdoc(handler) or ""
        is_async = inspect.iscoroutinefunction(handler)
        if threads is not None and is_async:
            raise errors.ConfigurationError(
                f"kind {name!r}: an async handler runs on the event loop; drop threads="
            )
        if slots is not None and not is_async:
            raise errors.ConfigurationError(
                f"kind {name!r}: slots= is for async handlers; a sync handler runs one job per"
                f" process, or declare threads={slots} to run that many at once on threads"
            )
        registry.add(
            KindSpec(
                name=name,
                handler=handler,
                input_model=input,
                output_model=output,
                queue=queue,
                max_attempts=max_attempts,
                timeout_s=timeout,
                backoff_s=retry_backoff,
                description=description if description is not None else doc,
                examples=tuple(examples),
                schedules=bound,
                limits=limits,
                concurrency_key=key_source,
                slots=slots,
                threads=threads,
            )
        )

        def continuation(fn: F) -> F:
            registry.set_continuation(name, fn)
            return fn

        handler.continuation = continuation  # type: ignore[attr-defined]
        return cast(Task, handler)

    return decorate


def schedule(id: str, **fields: Any) -> None:
    """Declare a schedule of its own: `conveyor.schedule("nightly", kind="report",
    cron="0 3 * * *", timezone="Europe/Zurich", input={...})`. The fields are those of
    `POST /v1/schedules`; workers register it in the store when they start."""
    from conveyor.schedules.model import NewSchedule

    registry.add_schedule(NewSchedule(id=id, **fields))


def import_kinds(modules: Iterable[str]) -> Registry:
    """Import the modules that declare kinds; return the registry they filled.

    The current directory is searched too (after everything else, so a file there never
    shadows an installed package): `conveyor worker -i my_kinds` finds `./my_kinds.py` as
    `python -m` would, though the `conveyor` script does not put its folder on `sys.path`."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise errors.ConfigurationError(
                f"cannot import kinds module {module!r}: {exc}; check CONVEYOR_IMPORTS / --import"
            ) from exc
    return registry
