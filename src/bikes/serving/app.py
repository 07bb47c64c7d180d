"""The FastAPI app: predict, capture, accept labels, report health and Prometheus metrics."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
import typing as T
import uuid

import numpy as np
import pandas as pd
import pydantic as pdt
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bikes.core import schemas
from bikes.io.capture import CaptureFullError, CaptureWriter
from bikes.io.store import Store
from bikes.serving.contract import (
    ROWS,
    InvocationRequest,
    InvocationResponse,
    LabelsRequest,
    LabelsResponse,
)
from bikes.serving.models import ModelSlot

PREDICTION_BUCKETS = (5, 10, 25, 50, 100, 200, 300, 400, 500, 700, 1000)


class Metrics:
    """Prometheus metrics in a registry of the app's own (several apps may share a process)."""

    def __init__(self, writer: CaptureWriter | None, slot: ModelSlot) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bikes_requests_total", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.errors = Counter(
            "bikes_request_errors_total",
            "Requests answered 4xx/5xx",
            ["endpoint"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bikes_request_latency_seconds", "Request latency", ["endpoint"], registry=self.registry
        )
        self.rows = Counter("bikes_prediction_rows_total", "Rows predicted", registry=self.registry)
        self.predictions = Histogram(
            "bikes_predictions",
            "Predicted rentals per hour",
            buckets=PREDICTION_BUCKETS,
            registry=self.registry,
        )
        self.written = Counter(
            "bikes_capture_rows_written_total", "Rows written to the store", registry=self.registry
        )
        pending = Gauge(
            "bikes_capture_rows_pending",
            "Rows acknowledged, not yet stored",
            registry=self.registry,
        )
        pending.set_function(lambda: float(writer.pending) if writer else 0.0)
        model = Gauge(
            "bikes_model_info",
            "The model version serving (value 1)",
            ["name", "version"],
            registry=self.registry,
        )
        self._model = model
        self._slot = slot

    def observe_model(self) -> None:
        self._model.clear()
        ref = self._slot.current.ref
        self._model.labels(name=ref.name, version=ref.version).set(1)


def create_app(
    slot: ModelSlot,
    store: Store | None,
    writer: CaptureWriter | None,
    max_batch_rows: int = 10_000,
) -> FastAPI:
    """The service; ``store``/``writer`` None serves without capture (the benchmark's baseline)."""
    metrics = Metrics(writer, slot)
    if writer is not None:
        writer.on_written = metrics.written.inc

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> T.AsyncIterator[None]:
        if writer is not None:
            writer.start()
        slot.start()
        yield
        slot.stop()
        if writer is not None:
            writer.stop()  # SIGTERM lands here through uvicorn: drain before exit

    app = FastAPI(title="bikes prediction service", lifespan=lifespan)

    @app.middleware("http")
    async def count(request: Request, call_next: T.Any) -> Response:
        start = time.perf_counter()
        response: Response = await call_next(request)
        # The route's template, not the raw path: a scanner probing random URLs must not
        # create a Prometheus series per URL.
        endpoint = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        if response.status_code >= 400:
            metrics.errors.labels(endpoint).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in error.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": problems})

    @app.post("/invocations", response_model=InvocationResponse)
    def invocations(request: InvocationRequest) -> InvocationResponse:
        received = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        start = time.perf_counter()
        try:
            records = request.records()
        except ValueError as error:
            raise HTTPException(
                422, detail=[{"field": "dataframe_split", "message": str(error)}]
            ) from None
        if not records:
            raise HTTPException(422, detail=[{"field": "rows", "message": "the batch is empty"}])
        if len(records) > max_batch_rows:
            raise HTTPException(
                413,
                detail=[
                    {
                        "field": "rows",
                        "message": f"{len(records)} rows; at most {max_batch_rows} per request",
                    }
                ],
            )
        rows = [row.model_dump() for row in _validated(records)]
        frame = pd.DataFrame(rows, columns=list(schemas.FEATURE_NAMES))
        loaded = slot.current  # one read: the version that answers is the version recorded
        predictions = np.asarray(loaded.model.predict(frame), dtype=float)
        latency_ms = (time.perf_counter() - start) * 1000
        ids = [uuid.uuid4().hex for _ in rows]
        if writer is not None:
            captured = _capture_rows(rows, predictions, ids, received, latency_ms, loaded.ref)
            try:
                writer.submit(captured)
            except CaptureFullError as error:
                raise HTTPException(
                    503, detail=[{"field": "capture", "message": str(error)}]
                ) from None
        metrics.rows.inc(len(rows))
        for value in predictions:
            metrics.predictions.observe(value)
        return InvocationResponse(
            predictions=predictions.tolist(), prediction_ids=ids, model_version=loaded.ref.version
        )

    @app.post("/labels", response_model=LabelsResponse)
    def labels(request: LabelsRequest) -> LabelsResponse:
        if store is None or writer is None:
            raise HTTPException(404, detail=[{"field": "labels", "message": "capture is off"}])
        latest = {label.prediction_id: label.target for label in request.labels}  # last one wins
        writer.flush()
        try:
            known = store.known_ids(list(latest))
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            store.write_labels(
                [
                    {"prediction_id": i, "label_time": now, "target": latest[i]}
                    for i in latest
                    if i in known
                ]
            )
        except sa.exc.SQLAlchemyError:
            raise HTTPException(
                503, detail=[{"field": "store", "message": "store unavailable, retry later"}]
            ) from None
        return LabelsResponse(
            recorded=len(known), unknown_ids=[i for i in latest if i not in known]
        )

    @app.get("/health")
    def health() -> dict[str, T.Any]:
        reachable = store.reachable() if store is not None else None
        degraded = writer is not None and (writer.degraded or not reachable)
        return {
            "status": "degraded" if degraded else "ok",
            "model_name": slot.current.ref.name,
            "model_version": slot.current.ref.version,
            "store_reachable": reachable,
            "rows_pending": writer.pending if writer is not None else 0,
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.observe_model()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _validated(records: list[dict[str, T.Any]]) -> list[pdt.BaseModel]:
    """Every row against the contract; a 422 names each failing row and field."""
    try:
        return T.cast(list[pdt.BaseModel], ROWS.validate_python(records))
    except pdt.ValidationError as error:
        problems = [
            {
                "row": e["loc"][0],
                "field": ".".join(str(p) for p in e["loc"][1:]),
                "message": e["msg"],
                "input": _json_safe(e.get("input")),
            }
            for e in error.errors(include_url=False)
        ]
        raise HTTPException(422, detail=problems) from None


def _json_safe(value: T.Any) -> T.Any:
    """The offending value, as JSON can carry it (NaN and infinities become text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)[:100]


def _capture_rows(
    rows: list[dict[str, T.Any]],
    predictions: np.ndarray,
    ids: list[str],
    received: dt.datetime,
    latency_ms: float,
    ref: T.Any,
) -> list[dict[str, T.Any]]:
    """Store rows built from the validated request dicts: no pandas on the request path."""
    shared = {
        "received_time": received,
        "model_name": ref.name,
        "model_version": ref.version,
        "latency_ms": latency_ms,
    }
    captured = []
    for values, prediction_id, prediction in zip(rows, ids, predictions.tolist(), strict=True):
        event = values.pop("timestamp", None)
        if event is not None and event.tzinfo is not None:
            event = event.astimezone(dt.UTC).replace(tzinfo=None)
        captured.append(
            {
                **values,
                **shared,
                "prediction_id": prediction_id,
                "event_time": event or received,
                "prediction": prediction,
            }
        )
    return captured
