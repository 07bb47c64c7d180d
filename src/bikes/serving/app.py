"""The FastAPI app: predict, capture, accept labels, report health and Prometheus metrics.

Rows are checked against the served version's contract. A request with an invalid row is
answered 422 naming each failing row and field, and each invalid row is recorded in the store's
``rejected_rows`` (reason, field, the values as received, capped), so monitoring sees the data
the model never did; the valid rows of that request are not predicted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time
import typing as T
import uuid

import numpy as np
import pydantic as pdt
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from loguru import logger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bikes.core.errors import ContractError, InputError
from bikes.io import registry
from bikes.io.capture import CaptureFullError, CaptureWriter
from bikes.io.store import Store, native, raw_row
from bikes.serving.contract import (
    InvocationRequest,
    InvocationResponse,
    LabelsRequest,
    LabelsResponse,
)
from bikes.serving.models import LoadedModel, ModelSlot

PREDICTION_BUCKETS = (5, 10, 25, 50, 100, 200, 300, 400, 500, 700, 1000)
MAX_ECHOED_CHARS = 100  # of an offending value, in a 422
_EVENT_TIME = pdt.TypeAdapter(dt.datetime)
Row = dict[str, T.Any]


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
            "Predicted values (regression)",
            buckets=PREDICTION_BUCKETS,
            registry=self.registry,
        )
        self.classes = Counter(
            "bikes_predicted_classes_total",
            "Predicted classes (classification, a model that gives scores)",
            ["predicted_class"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "bikes_rows_rejected_total",
            "Rows refused by validation, by the first field at fault",
            ["field"],
            registry=self.registry,
        )
        self.unrecorded = Counter(
            "bikes_rows_rejected_unrecorded_total",
            "Rejected rows not recorded in the store (capture queue full)",
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

    def reject(loaded: LoadedModel, records: list[Row], error: pdt.ValidationError) -> T.NoReturn:
        """A 422 naming every failing row and field; each failing row recorded as rejected."""
        received = _utc_now()
        errors = error.errors(include_url=False)
        problems = [
            {
                "row": e["loc"][0] if e["loc"] else None,
                "field": ".".join(str(p) for p in e["loc"][1:]),
                "message": e["msg"],
                "input": _echoed(e.get("input")),
            }
            for e in errors
        ]
        rejected = _rejected_rows(loaded, records, errors, received)
        known = set(loaded.rows.known_fields)
        for row in rejected:
            metrics.rejected.labels(row["field"] if row["field"] in known else "other").inc()
        if writer is not None and rejected:
            try:
                writer.submit_rejected(rejected)
            except CaptureFullError as full:
                metrics.unrecorded.inc(len(rejected))
                logger.warning("{} rejected rows not recorded: {}", len(rejected), full)
        raise HTTPException(422, detail=problems)

    @app.post("/invocations", response_model=InvocationResponse, response_model_exclude_none=True)
    def invocations(request: InvocationRequest) -> InvocationResponse:
        received = _utc_now()
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
        loaded = slot.current  # one read: the version that answers is the version recorded
        try:
            rows = loaded.rows.validate(records)
        except pdt.ValidationError as error:
            reject(loaded, records, error)
        predictions, classes, probabilities = _predict(loaded, rows)
        latency_ms = (time.perf_counter() - start) * 1000
        ids = [uuid.uuid4().hex for _ in rows]
        if writer is not None:
            scores = _scores(loaded, classes, probabilities)
            captured = _capture_rows(loaded, rows, predictions, scores, ids, received, latency_ms)
            try:
                writer.submit(captured)
            except CaptureFullError as error:
                raise HTTPException(
                    503, detail=[{"field": "capture", "message": str(error)}]
                ) from None
        metrics.rows.inc(len(rows))
        if not loaded.contract.is_classification:
            for value in predictions:
                metrics.predictions.observe(value)
        elif classes is not None:
            for value in predictions:
                metrics.classes.labels(str(value)).inc()
        return InvocationResponse(
            predictions=predictions,
            probabilities=_probabilities(classes, probabilities),
            prediction_ids=ids,
            model_name=loaded.ref.name,
            model_version=loaded.ref.version,
        )

    @app.post("/labels", response_model=LabelsResponse)
    def labels(request: LabelsRequest) -> LabelsResponse:
        if store is None or writer is None:
            raise HTTPException(404, detail=[{"field": "labels", "message": "capture is off"}])
        regression = not slot.current.contract.is_classification
        problems = [
            {
                "field": f"labels.{number}.target",
                "message": "Input should be a finite number (the model is a regression)",
                "input": _echoed(label.target),
            }
            for number, label in enumerate(request.labels)
            if regression and (isinstance(label.target, bool | str))
        ]
        if problems:
            raise HTTPException(422, detail=problems)
        latest = {  # the last one wins
            label.prediction_id: float(label.target) if regression else label.target
            for label in request.labels
        }
        writer.flush()
        try:
            known = store.known_ids(list(latest))
            now = _utc_now()
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
        current = slot.current
        return {
            "status": "degraded" if degraded else "ok",
            "model_name": current.ref.name,
            "model_version": current.ref.version,
            "task": current.contract.task,
            "store_reachable": reachable,
            "rows_pending": writer.pending if writer is not None else 0,
        }

    @app.get("/contract")
    def contract() -> dict[str, T.Any]:
        """The served version's contract and the JSON schema of a request row."""
        current = slot.current
        return {
            "model_name": current.ref.name,
            "model_version": current.ref.version,
            "contract": current.contract.model_dump(mode="json"),
            "row_schema": current.rows.json_schema(),
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.observe_model()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _predict(
    loaded: LoadedModel, rows: list[Row]
) -> tuple[list[T.Any], list[T.Any] | None, np.ndarray | None]:
    """Predictions (numbers, or classes as the model knows them), and a classifier's classes
    and probabilities when it gives scores."""
    frame = loaded.rows.frame(rows)
    try:
        values = registry.predict(loaded.model, loaded.ref, frame)
        scored = registry.scores(loaded.model, frame) if loaded.contract.is_classification else None
    except InputError as error:  # the contract let through what the model refuses
        logger.error("{}", error)
        raise HTTPException(500, detail=[{"field": "model", "message": str(error)}]) from None
    predictions = values.tolist()
    if scored is None:
        return predictions, None, None
    classes = [native(c) for c in scored[0]]
    as_class = {c: c for c in classes}  # 1.0 back to the class 1, True stays True
    return [as_class.get(p, p) for p in predictions], classes, scored[1]


def _scores(
    loaded: LoadedModel, classes: list[T.Any] | None, probabilities: np.ndarray | None
) -> list[dict[str, float]] | None:
    """Per row, the contract's score columns (when it names them and the model gives scores)."""
    if classes is None or probabilities is None or loaded.contract.score is None:
        return None
    try:
        frame = loaded.contract.score_frame(classes, probabilities)
    except ContractError as error:  # a pyfunc's classes, known only now: predictions go on
        logger.warning("{}: scores not captured: {}", loaded.ref.uri, error)
        return None
    return T.cast(list[dict[str, float]], frame.to_dict(orient="records"))


def _probabilities(
    classes: list[T.Any] | None, probabilities: np.ndarray | None
) -> list[dict[str, float]] | None:
    if classes is None or probabilities is None:
        return None
    names = [str(c) for c in classes]
    return [dict(zip(names, row, strict=True)) for row in probabilities.tolist()]


def _capture_rows(
    loaded: LoadedModel,
    rows: list[Row],
    predictions: list[T.Any],
    scores: list[dict[str, float]] | None,
    ids: list[str],
    received: dt.datetime,
    latency_ms: float,
) -> list[Row]:
    """Store rows built from the validated request dicts: no pandas on the request path."""
    shared = {
        "received_time": received,
        "model_name": loaded.ref.name,
        "model_version": loaded.ref.version,
        "latency_ms": latency_ms,
    }
    timestamp = loaded.rows.timestamp
    captured = []
    for number, (values, prediction_id, prediction) in enumerate(
        zip(rows, ids, predictions, strict=True)
    ):
        event = values.pop(timestamp, None) if timestamp is not None else None
        captured.append(
            {
                **shared,
                "prediction_id": prediction_id,
                "event_time": _naive_utc(event) if event is not None else received,
                "inputs": values,
                "prediction": prediction,
                "scores": scores[number] if scores is not None else None,
            }
        )
    return captured


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is not None:
        return moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _rejected_rows(
    loaded: LoadedModel,
    records: list[Row],
    errors: list[T.Any],
    received: dt.datetime,
) -> list[Row]:
    """One ``rejected_rows`` row per failing request row: its first fault, the others named."""
    faults: dict[int, list[str]] = {}
    reasons: dict[int, str] = {}
    for e in errors:
        location = e["loc"]
        if not location or not isinstance(location[0], int):
            continue
        number = location[0]
        field = ".".join(str(p) for p in location[1:]) or "row"
        faults.setdefault(number, []).append(field)
        reasons.setdefault(number, str(e["msg"]))
    rejected = []
    for number, fields in faults.items():
        record = records[number] if number < len(records) else None
        others = sorted(set(fields[1:]) - {fields[0]})
        reason = reasons[number] + (f" (also failing: {', '.join(others)})" if others else "")
        rejected.append(
            {
                "rejection_id": uuid.uuid4().hex,
                "received_time": received,
                "event_time": _event_time(loaded, record) or received,
                "model_name": loaded.ref.name,
                "model_version": loaded.ref.version,
                "row": number,
                "field": fields[0],
                "reason": reason,
                "raw": raw_row(record, first=loaded.rows.known_fields),
            }
        )
    return rejected


def _event_time(loaded: LoadedModel, record: T.Any) -> dt.datetime | None:
    """A rejected row's own event time, when it has one that reads as a time."""
    timestamp = loaded.rows.timestamp
    if timestamp is None or not isinstance(record, dict) or record.get(timestamp) is None:
        return None
    try:
        return _naive_utc(_EVENT_TIME.validate_python(record[timestamp]))
    except pdt.ValidationError:
        return None


def _echoed(value: T.Any) -> T.Any:
    """The offending value, as JSON can carry it and at most ``MAX_ECHOED_CHARS`` long."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return value[:MAX_ECHOED_CHARS]
    return repr(value)[:MAX_ECHOED_CHARS]
