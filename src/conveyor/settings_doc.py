"""Render the reference of every `CONVEYOR_*` setting from the settings classes themselves.

`python -m conveyor.settings_doc > docs/reference/settings.md` regenerates the page; a test
fails when the page and the code disagree, so the reference cannot drift.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

# Modules that declare settings classes (imported so their classes are found).
MODULES = (
    "conveyor.settings",
    "conveyor.storage.s3",
    "conveyor.webhooks.config",
    "conveyor.webhooks.ssrf",
    "conveyor.swissai.settings",
    "conveyor.api.compat.taskqueue",
    "conveyor.api.compat.linkage",
)

HEADER = """# Settings

Every setting is an environment variable (a `.env` file is not read: set them in the
environment, the compose file or the Helm values). Command-line flags override them where a
command has one. This page is generated from the code (`python -m conveyor.settings_doc`).
"""


def settings_classes() -> Iterator[type[BaseSettings]]:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue  # an optional extra is not installed
    seen: set[type[BaseSettings]] = set()
    stack = list(BaseSettings.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("conveyor.") and cls not in seen:
            seen.add(cls)
    yield from sorted(seen, key=lambda c: (c.__module__ != "conveyor.settings", c.__module__))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed"
    value = field.default
    if value is None or value == "":
        return "—"
    return f"`{value}`"


def render() -> str:
    parts = [HEADER]
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        title = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        parts.append(f"\n## `{prefix}*` — {title}\n\n_{cls.__module__}.{cls.__name__}_\n")
        parts.append("\n| variable | default | meaning |\n|---|---|---|")
        for name, field in cls.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
            parts.append(f"| `{prefix}{name.upper()}` | {_default(field)} | {meaning} |")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
