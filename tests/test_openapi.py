"""The API contract: every operation under /api/v1 with a stable id and a tag; errors documented."""

from __future__ import annotations

import httpx


async def test_every_operation_has_a_stable_id_and_a_tag(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert operations
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len(ids) == len(set(ids))
    for path, _method, operation in operations:
        assert path.startswith("/api/v1/")
        assert operation["tags"]
        assert operation["operationId"].startswith(operation["tags"][0] + "_")
    assert {"health_liveness", "health_liveness_head", "health_readiness", "health_readiness_head"} <= set(ids)


async def test_errors_are_documented_as_problems(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    readiness = document["paths"]["/api/v1/health/ready"]["get"]["responses"]
    assert readiness["4XX"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    # The 503 of readiness is a health document, not a problem.
    assert "Readiness" in str(readiness["503"]["content"])
    assert "application/health+json" in readiness["200"]["content"]
    schemas = document["components"]["schemas"]
    assert {"code", "request_id", "errors"} <= set(schemas["Problem"]["properties"])
    assert "HTTPValidationError" not in schemas


async def test_docs_and_redoc_are_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    redoc = await client.get("/redoc")
    assert docs.status_code == redoc.status_code == 200
    assert "/openapi.json" in docs.text
    assert "/openapi.json" in redoc.text
