"""The service's HTTP answers other than images: its one JSON error shape, the API-key check, and the
OpenAPI description of every status `/imagine` returns (tests/test_openapi_contract.py holds it to that).

Kept apart from services/app.py so the handler module stays about routing and batching; handler code,
so an edit here reloads in-process (services/hotswap.py).
"""

import hmac
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.routing import Match

from services.adapters import AdapterError
from services.admission import Decision
from services.schemas import ErrorBody


def field_errors(errors: list[dict[str, Any]]) -> dict[str, str]:
    """{"steps": "Input should be greater than or equal to 1", ...} from FastAPI's error list."""
    fields: dict[str, str] = {}
    for error in errors:
        loc = list(error.get("loc", ()))
        source = str(loc.pop(0)) if loc and loc[0] in ("query", "body") else "request"
        # Integer parts are character offsets (a JSON decode error), not field names.
        name = ".".join(str(part) for part in loc if isinstance(part, str))
        fields[name or source] = str(error.get("msg", "invalid"))
    return fields


def invalid(fields: dict[str, str], detail: list[dict[str, Any]]) -> JSONResponse:
    names = ", ".join(sorted(fields))
    return JSONResponse(
        status_code=422,
        content={"error": f"invalid request: {names}", "fields": fields, "detail": detail},
    )


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette's own 405 names only the first route's."""
    routes = request.app.router.routes  # the app Serve serves: a copy of `api` made by serve.ingress
    return [
        method
        for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]


def authorized(request: Request, expected: str | None) -> bool:
    if not expected:
        return True
    header = request.headers.get("authorization", "")
    offered = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    return hmac.compare_digest(offered.encode(), expected.encode())


def unauthorized() -> JSONResponse:
    return JSONResponse(
        status_code=401,
        content={"error": "missing or wrong API key: send Authorization: Bearer <key> or X-API-Key"},
        headers={"WWW-Authenticate": "Bearer"},
    )


def adapter_error(error: AdapterError) -> JSONResponse:
    return JSONResponse(status_code=error.status, content={"error": str(error), "adapter": error.adapter_id})


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "model": ErrorBody, **extra}


_TEXT = {"text/plain": {"schema": {"type": "string"}}}  # what Serve's proxy writes for its own 408 and 503
_RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds to wait before retrying; always sent by the replica's admission "
        "(JSON body), absent from Serve's own queue-bound 503 (text body)",
        "schema": {"type": "integer", "minimum": 0},
        "required": False,
    }
}
IMAGINE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the image", "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
    400: _error("POST: the body cannot be parsed at all (e.g. not UTF-8); syntax errors in JSON text are 422"),
    401: _error("missing or wrong API key (when the deployment sets one)"),
    404: _error("`adapter`: no adapter with this id in the store; the body names it"),
    408: {"description": "still queued or running past the request timeout (Serve's proxy; a text body)",
          "content": _TEXT},
    422: _error("a field is invalid, over this deployment's limits, or the adapter is damaged; `fields` names it"),
    424: _error("the adapter was trained on another base model than this deployment serves"),
    500: _error("generation failed; the body has the request id"),
    503: _error("overloaded: retry after the Retry-After header's seconds. JSON from the replica's admission; "
                "text from Serve when its queue bound is full", content=_TEXT, headers=_RETRY_AFTER),
}  # fmt: skip


def overloaded(decision: Decision, max_latency_x: float | None) -> JSONResponse:
    retry = decision.retry_after_s
    return JSONResponse(
        status_code=503,
        content={
            "error": (
                f"overloaded: this request would finish in about {decision.estimate_s:.1f} s, past this "
                f"deployment's bound of {decision.bound_s:.1f} s ({max_latency_x} x one image alone); "
                f"retry in {retry} s"
            ),
            "retry_after_s": retry,
        },
        headers={"Retry-After": str(retry)},
    )
