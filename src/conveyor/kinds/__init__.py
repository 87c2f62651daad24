"""Kinds: the `@task` registry and the built-in kinds."""

from conveyor.kinds.registry import KindSpec, Registry, import_kinds, registry, task

__all__ = ["KindSpec", "Registry", "import_kinds", "registry", "task"]
