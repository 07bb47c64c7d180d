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
import threading
import time
import typing as T
import uuid

import numpy as np
import pydantic as pdt
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
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
from prometheus_client.core import CounterMetricFamily, Metric
from starlette.exceptions import HTTPException as StarletteHTTPException
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from bikes.core.errors import ContractError, InputError
from bikes.io import registry
from bikes.io.capture import STAGES, CaptureRefusedError, CaptureWriter, new_ids
from bikes.io.store import Store, native, raw_row
from bikes.serving.contract import (
    EVENT_TIME,
    InvocationRequest,
    InvocationResponse,
    LabelsRequest,
    LabelsResponse,
)
from bikes.serving.models import LoadedModel, ModelSlot

PREDICTION_BUCKETS = (5, 10, 25, 50, 100, 200, 300, 400, 500, 700, 1000)
MAX_ECHOED_CHARS = 100  # of an offending value, in a 422
MAX_ECHOED_FIELD_CHARS = 200  # of a field's name: a client's unknown key is named, and capped
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
        spooled = Gauge(
            "bikes_capture_rows_spooled",
            "Rows waiting in the spool for the store",
            registry=self.registry,
        )
        spooled.set_function(lambda: float(writer.spooled) if writer else 0.0)
        self.refused = Counter(
            "bikes_capture_rows_refused_total",
            "Rows answered 503 because capture could not keep them (or its queue was full)",
            registry=self.registry,
        )
        if writer is not None:
            self.registry.register(_CaptureCollector(writer))
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
    max_label_rows: int = 100_000,
    model_threads: int | None = None,
) -> FastAPI:
    """The service; ``store``/``writer`` None serves without capture (the benchmark's baseline).

    ``max_batch_rows`` rows per /invocations and ``max_label_rows`` labels per /labels request;
    a larger one is answered 413 with the limit. ``model_threads``: the OpenMP/BLAS threads a
    prediction may use (None: the libraries' default)."""
    metrics = Metrics(writer, slot)
    if writer is not None:
        writer.on_written = metrics.written.inc

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> T.AsyncIterator[None]:
        if writer is not None:
            writer.start()
        slot.start()
        yield
        # SIGTERM lands here through uvicorn: drain before exit. Nothing may raise here (uvicorn
        # would say "Application shutdown failed" and exit 0): stop() never does, and counts
        # the rows it could not keep in writer.lost for the serving job to report.
        try:
            slot.stop()
        except Exception as error:
            logger.error("Stopping the model poller failed: {}", type(error).__name__)
        if writer is not None:
            writer.stop()

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
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        """422 naming each field; never the offending value whole (a client's unknown key is
        named, and it can be megabytes); a body that is not JSON at all is a 415."""
        content_type = request.headers.get("content-type")
        if not _is_json(content_type):
            got = repr(_printable(content_type, MAX_ECHOED_CHARS)) if content_type else "none"
            message = f"send the body as JSON, Content-Type: application/json (got {got})"
            return JSONResponse(
                status_code=415, content={"detail": [{"field": "content-type", "message": message}]}
            )
        return JSONResponse(
            status_code=422, content={"detail": [_request_problem(e) for e in error.errors()]}
        )

    @app.exception_handler(StarletteHTTPException)  # FastAPI raises Starlette's, not its own
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        """FastAPI's 400 for a body it could not parse, with the reason (invalid UTF-8...)."""
        cause = error.__cause__
        if error.status_code == 400 and cause is not None:
            if isinstance(cause, UnicodeDecodeError):
                reason = f"it is not UTF-8 text (byte {cause.object[cause.start]:#04x} at "
                reason += f"position {cause.start})"
            elif isinstance(cause, RecursionError):
                reason = "it is nested too deeply"
            else:
                reason = type(cause).__name__
            message = f"the body cannot be read as JSON: {reason}"
            return JSONResponse(
                status_code=400, content={"detail": [{"field": "body", "message": message}]}
            )
        return await http_exception_handler(request, error)

    def reject(loaded: LoadedModel, records: list[Row], error: pdt.ValidationError) -> T.NoReturn:
        """A 422 naming every failing row and field; each failing row recorded as rejected."""
        received = _utc_now()
        errors = error.errors(include_url=False)
        problems = [
            {
                "row": e["loc"][0] if e["loc"] else None,
                "field": _field(e["loc"][1:]) or "row",
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
            except CaptureRefusedError as full:
                metrics.unrecorded.inc(len(rejected))
                logger.warning("{} rejected rows not recorded: {}", len(rejected), full)
        raise HTTPException(422, detail=problems)

    def refuse(rows: int, error: CaptureRefusedError) -> T.NoReturn:
        """503: the rows could not be kept, so none is acknowledged (the client retries)."""
        metrics.refused.inc(rows)
        raise HTTPException(503, detail=[{"field": "capture", "message": str(error)}])

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
        if writer is not None:
            try:
                writer.check()  # capture cannot keep rows now: refuse before predicting
            except CaptureRefusedError as error:
                refuse(len(rows), error)
        _limit_threads(model_threads)
        predictions, classes, probabilities = _predict(loaded, rows)
        latency_ms = (time.perf_counter() - start) * 1000
        ids = new_ids(len(rows))  # time-ordered: cheaper to index than uuid4
        if writer is not None:
            scores = _scores(loaded, classes, probabilities)
            captured = _capture_rows(loaded, rows, predictions, scores, ids, received, latency_ms)
            try:
                writer.submit(captured)  # durable: returns once the rows are kept
            except CaptureRefusedError as error:
                refuse(len(captured), error)
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
        if len(request.labels) > max_label_rows:
            message = f"{len(request.labels)} labels; at most {max_label_rows} per request"
            raise HTTPException(413, detail=[{"field": "labels", "message": message}])
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
    def health() -> JSONResponse:
        """The capture writer's real state: ``failing`` (503) while rows cannot be kept,
        ``degraded`` while they go to the spool, else ``ok``."""
        reachable = store.reachable() if store is not None else None
        status = writer.status if writer is not None else "ok"
        if status == "ok" and reachable is False:
            status = "degraded"
        current = slot.current
        body = {
            "status": status,
            "model_name": current.ref.name,
            "model_version": current.ref.version,
            "task": current.contract.task,
            "store_reachable": reachable,
            "writer_alive": writer.alive if writer is not None else None,
            "last_error": writer.last_error if writer is not None else None,
            "rows_pending": writer.pending if writer is not None else 0,
            "rows_spooled": writer.spooled if writer is not None else 0,
        }
        return JSONResponse(body, status_code=503 if status == "failing" else 200)

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


class _CaptureCollector:
    """The writer's own failure and quarantine counts, read at each scrape."""

    def __init__(self, writer: CaptureWriter) -> None:
        self._writer = writer

    def collect(self) -> T.Iterator[Metric]:
        failures = CounterMetricFamily(
            "bikes_capture_failures",
            "Capture failures by stage: store (a write), spool (an append), replay, writer",
            labels=["stage"],
        )
        for stage in STAGES:
            failures.add_metric([stage], float(self._writer.failures[stage]))
        yield failures
        yield CounterMetricFamily(
            "bikes_capture_quarantined_lines",
            "Unreadable spool lines moved to the quarantine file",
            value=float(self._writer.quarantined),
        )


_THREAD_LIMIT = threading.local()


def _limit_threads(threads: int | None) -> None:
    """Limit the OpenMP and BLAS threads of predictions made in this thread, once per request
    thread (OpenMP's limit is the calling thread's: a limit set at start-up would not reach
    the server's worker threads)."""
    if threads is None or getattr(_THREAD_LIMIT, "threads", None) == threads:
        return
    threadpool_limits(limits=threads)
    _THREAD_LIMIT.threads = threads


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
        # Validated as the contract's EventTime: already naive UTC.
        event = values.pop(timestamp, None) if timestamp is not None else None
        captured.append(
            {
                **shared,
                "prediction_id": prediction_id,
                "event_time": event if event is not None else received,
                "inputs": values,
                "prediction": prediction,
                "scores": scores[number] if scores is not None else None,
            }
        )
    return captured


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
        return EVENT_TIME.validate_python(record[timestamp])  # naive UTC, or a ValidationError
    except pdt.ValidationError:
        return None


def _echoed(value: T.Any) -> T.Any:
    """The offending value, as JSON can carry it and at most ``MAX_ECHOED_CHARS`` long."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        return _printable(value, MAX_ECHOED_CHARS)
    return repr(value)[:MAX_ECHOED_CHARS]


def _printable(text: str, limit: int) -> str:
    """At most ``limit`` characters of a client's text, as UTF-8 can carry it (a lone
    surrogate, which JSON's ``\\ud800`` can make, would fail the response: 500)."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _field(location: T.Sequence[T.Any]) -> str:
    """A dotted field path, capped: its parts can be a client's own keys."""
    return _printable(".".join(str(p) for p in location), MAX_ECHOED_FIELD_CHARS)


def _request_problem(error: T.Mapping[str, T.Any]) -> dict[str, str]:
    """One problem of a request FastAPI could not read into its model: the field and message."""
    location = [p for p in error["loc"] if p != "body"]
    if error["type"] == "json_invalid":  # its location is the character position
        reason = _printable(str((error.get("ctx") or {}).get("error", "")), MAX_ECHOED_CHARS)
        position = f" at character {location[0]}" if location else ""
        return {"field": "body", "message": f"JSON decode error{position}: {reason}"}
    return {"field": _field(location) or "body", "message": error["msg"]}


def _is_json(content_type: str | None) -> bool:
    """application/json or application/*+json, parameters aside: what FastAPI parses."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
