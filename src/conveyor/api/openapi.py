"""OpenAPI with the `POST /v1/jobs` body typed per kind.

Kinds are registered in the store at run time, so the document is rebuilt (cheaply, from a
cached base) whenever the set of kinds changes: the body becomes a discriminated union on
`kind`, each member carrying that kind's own input JSON Schema.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from conveyor.api.schemas import Problem
from conveyor.models import KindInfo, NewJob
from conveyor.service import MAX_BATCH
from conveyor.storage.base import SAFE_NAME

REF = "#/components/schemas/{model}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _rewrite_refs(node: Any, prefix: str) -> Any:
    """Point a kind schema's local `#/$defs/X` refs at the hoisted components."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = REF.format(model=prefix + value.removeprefix("#/$defs/"))
            else:
                out[key] = _rewrite_refs(value, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix) for v in node]
    return node


def _kind_schema(kind: KindInfo, new_job: dict[str, Any], schemas: dict[str, Any]) -> str:
    """Add `NewJob_<kind>` (and the kind's $defs) to `schemas`; return its name."""
    prefix = f"{_safe(kind.name)}__"
    body = _rewrite_refs(copy.deepcopy(kind.input_schema), prefix)
    for def_name, definition in body.pop("$defs", {}).items():
        schemas[prefix + def_name] = definition
    if kind.examples:
        body.setdefault("examples", kind.examples)
    member = copy.deepcopy(new_job)
    member["title"] = f"NewJob[{kind.name}]"
    member["description"] = kind.description or f"A `{kind.name}` job."
    member["properties"]["kind"] = {"type": "string", "const": kind.name, "title": "Kind"}
    member["properties"]["input"] = body or {"type": "object"}
    required = {*member.get("required", []), "kind"}
    if body.get("required"):  # the default `{}` input would be refused
        required.add("input")
    member["required"] = sorted(required)
    name = f"NewJob_{_safe(kind.name)}"
    schemas[name] = member
    return name


def _typed_body(kinds: list[KindInfo], schemas: dict[str, Any]) -> None:
    new_job = NewJob.model_json_schema(ref_template=REF)
    for def_name, definition in new_job.pop("$defs", {}).items():
        schemas.setdefault(def_name, definition)
    new_job["properties"]["files"] = {
        "type": "object",
        "propertyNames": {"pattern": SAFE_NAME.pattern},
        "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "description": "Input files staged with PUT /v1/uploads/{name}: name -> upload id.",
    }
    schemas["NewJob"] = new_job
    if kinds:
        names = {k.name: _kind_schema(k, new_job, schemas) for k in kinds}
        one: dict[str, Any] = {
            "oneOf": [{"$ref": REF.format(model=n)} for n in names.values()],
            "discriminator": {
                "propertyName": "kind",
                "mapping": {k: REF.format(model=n) for k, n in names.items()},
            },
        }
    else:
        one = {"$ref": REF.format(model="NewJob")}
    schemas["TypedNewJob"] = {"title": "A job of one of the registered kinds", **one}
    schemas["BatchSubmit"] = {
        "title": "BatchSubmit",
        "type": "object",
        "properties": {
            "jobs": {
                "type": "array",
                "items": {"$ref": REF.format(model="TypedNewJob")},
                "minItems": 1,
                "maxItems": MAX_BATCH,
            }
        },
        "required": ["jobs"],
        "additionalProperties": False,
    }
    schemas["SubmitBody"] = {
        "title": "One job, or a batch",
        "anyOf": [
            {"$ref": REF.format(model="TypedNewJob")},
            {"$ref": REF.format(model="BatchSubmit")},
        ],
    }


#: The /v1 API's tags; compat layers keep the error formats their seed systems used.
V1_TAGS = frozenset({"jobs", "files", "catalog", "lease", "health"})


#: What a compat route answers on errors other than request validation: the seed system's own
#: error shapes (JSON, problem+json from the shared layers, or plain text), at any status.
COMPAT_ERRORS = {
    "description": "An error, in this API's own shape (see its page under Workloads); request"
    " validation errors, unsupported JSON and auth errors are problem+json.",
    "content": {
        "application/json": {"schema": {}},
        "application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}},
        "text/plain": {"schema": {"type": "string"}},
    },
}


def _problem_responses(doc: dict[str, Any]) -> None:
    """Errors as the server sends them. /v1 errors are `application/problem+json` only (FastAPI
    would claim JSON); so are request validation errors (422) everywhere, since one handler
    answers them for every route. Compat routes document their other errors as `default`."""
    ref = {"schema": {"$ref": REF.format(model="Problem")}}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            v1 = bool(V1_TAGS & set(operation.get("tags", ())))
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and (v1 or status == "422"):
                    response["content"] = {"application/problem+json": ref}
            if not v1:
                responses.setdefault("default", copy.deepcopy(COMPAT_ERRORS))


def install(app: FastAPI, kinds: Callable[[], list[KindInfo]]) -> None:
    """Replace `app.openapi` with one that types the submit body from `kinds()`."""
    base_openapi = app.openapi
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        base = cache.get("base")
        if base is None:
            base = cache["base"] = base_openapi()
            schemas = base.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(ref_template=REF)
            base["components"]["securitySchemes"] = {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `conveyor keys create`. Not needed when"
                    " the server listens on loopback and no key exists.",
                }
            }
            base["security"] = [{"apiKey": []}, {}]
            _problem_responses(base)
        try:
            found = kinds()
        except Exception:  # the store is down: still serve the generic document
            found = []
        signature = json.dumps(
            [k.model_dump(mode="json", exclude={"updated_at"}) for k in found], sort_keys=True
        )
        if cache.get("signature") != signature:
            doc = copy.deepcopy(base)
            _typed_body(found, doc["components"]["schemas"])
            cache["signature"], cache["doc"] = signature, doc
        document: dict[str, Any] = cache["doc"]
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
