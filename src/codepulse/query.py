"""Query strings parsed by one pydantic model, for the hottest read routes.

FastAPI validates each declared query parameter, and solves each sub-dependency, on its own: on
a board answered from the cache that bookkeeping cost more than everything else the request did
(450 µs against 180 µs in-process, issue 13). A route on such a path takes `request: Request`,
parses its query with `parse_query(Model, request)` — one pydantic validation, its errors
reported as FastAPI reports its own (a 422 `validation_failed` problem, each field as
`query.<name>`) — and documents the same parameters with `openapi_extra=query_parameters(Model)`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` inlined (for parameters or a body FastAPI does not
    parse itself, documented through `openapi_extra`)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            own = {key: resolve(value) for key, value in node.items() if key != "$ref"}
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                # The reference's siblings (a field's default, description) stay beside it.
                return {**resolve(definitions[reference.rsplit("/", 1)[-1]]), **own}
            return own if reference is None else {**own, "$ref": reference}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters for the fields of `model` (for an operation's `parameters`)."""
    schema = inline_schema(model)
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": field_schema}
        if "description" in field_schema:
            parameter["description"] = field_schema["description"]
        parameters.append(parameter)
    return parameters


def parse_query(model: type[Model], request: Request) -> Model:
    """The request's query string as `model` (a repeated parameter counts by its last value, as
    FastAPI's own single-valued parameters do); invalid, a 422 problem like FastAPI's."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as error:
        errors = [{**item, "loc": ("query", *item["loc"])} for item in error.errors(include_url=False)]
        raise RequestValidationError(errors) from None
