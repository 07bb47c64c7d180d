"""Batch predictions with the champion: validated inputs in, predictions and version out.

Two engines. ``pandas`` (the default) reads one parquet file into memory, validates every row
with the contract's pandera schema and scores through the pyfunc. ``spark`` reads a file, a
folder or a glob with Spark and scores with ``mlflow.pyfunc.spark_udf`` on the executors: no
row reaches the driver (a classifier's score columns: a second pandas UDF over its
probabilities, as ``spark_udf`` calls only ``predict``). Its validation is the same contract
checked where the rows are: the columns and their kinds on Spark's schema (free), then one
distributed aggregation counting the values outside each feature's range, categories or
nullability (one pass, one row back); pandera would need every row in one pandas frame on the
driver, which is what Spark avoids.
"""

from __future__ import annotations

import os
import shutil
import typing as T
import uuid
from pathlib import Path

import pandas as pd
import pydantic as pdt
from loguru import logger

from bikes.core import schemas
from bikes.core.contract import Contract, Feature
from bikes.core.errors import ContractError, SchemaError
from bikes.io import registry
from bikes.io.contracts import CONTRACT_DESCRIPTION, ContractSpec, resolve_contract
from bikes.io.datasets import ParquetReader, ParquetWriter, check_writable
from bikes.io.spark import SparkSettings
from bikes.jobs.base import Job, Locals

if T.TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

MODEL_VERSION = "model_version"
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
EVENT_DATE = "event_date"  # the Spark output's partition column, from the contract's timestamp
# A signature's output type as spark_udf's result_type.
RESULT_TYPES = {
    "double": "double",
    "float": "double",
    "long": "long",
    "integer": "long",
    "string": "string",
    "boolean": "boolean",
}


class InferenceJob(Job):
    """Score a parquet file; the output keeps the event time and id and names the model version.

    A classifier's output holds the predicted class and, where the contract names ``score``
    columns and the model gives probabilities, those too.
    """

    KIND: T.Literal["InferenceJob"] = "InferenceJob"

    inputs: ParquetReader = pdt.Field(
        default=ParquetReader(path="data/splits/production.parquet"),
        description="The rows to score: the contract's features (timestamp and id kept).",
    )
    outputs: ParquetWriter = pdt.Field(
        default=ParquetWriter(path="outputs/predictions.parquet"),
        description="Where predictions go: timestamp, id, prediction, scores, model_version.",
    )
    registered_model: str = pdt.Field(
        default="bikes", description="The registry entry; model_uri defaults to its @champion."
    )
    model_uri: str | None = pdt.Field(
        default=None, description="The model to use. Default: models:/<registered_model>@champion."
    )
    contract: ContractSpec | None = pdt.Field(default=None, description=CONTRACT_DESCRIPTION)
    engine: T.Literal["pandas", "spark"] = pdt.Field(
        default="pandas",
        description="pandas: one file in memory, pandera on every row. spark: inputs.path may "
        "be a file, a folder or a glob; scored by mlflow.pyfunc.spark_udf on the executors; "
        "outputs.path is a folder of parquet files partitioned by event_date (when the "
        "contract has a timestamp); needs the spark extra and Java 17.",
    )
    spark: SparkSettings = pdt.Field(
        default=SparkSettings(), description="The Spark session of the spark engine."
    )

    @property
    def resolved_model_uri(self) -> str:
        return self.model_uri or f"models:/{self.registered_model}@champion"

    def run(self) -> Locals:
        if self.engine == "spark":
            return self._run_spark()
        # Before the model is loaded and every row scored: an unwritable output fails now.
        check_writable(self.outputs.path, "job.outputs.path")
        client = self.mlflow_service.client()
        ref = registry.resolve(client, self.resolved_model_uri)
        model = registry.load(ref)
        contract = resolve_contract(client, ref, self.contract, model)
        frame = self.inputs.read()
        contract.check_kinds(frame, self.inputs.source)
        schemas.validate(frame, contract.inputs_schema(), self.inputs.source)
        features = frame.loc[:, contract.feature_names]
        logger.info("Scoring {} rows with {} version {}", len(frame), ref.name, ref.version)
        outputs = pd.DataFrame(index=frame.index)
        for column in (contract.timestamp, contract.id):
            if column is not None and column in frame.columns:
                outputs[column] = frame[column]
        outputs[contract.prediction] = registry.predict(model, ref, features)
        outputs = outputs.join(self._scores(model, features, contract))
        outputs[MODEL_VERSION] = str(ref.version)
        path = self.outputs.write(outputs.reset_index(drop=True))
        logger.success("Wrote {} predictions to {}", len(outputs), path)
        return {"model_version": ref.version, "rows": len(outputs), "path": str(path)}

    @staticmethod
    def _scores(model: T.Any, features: pd.DataFrame, contract: Contract) -> pd.DataFrame:
        """The contract's score columns, for a classifier that gives probabilities."""
        if not contract.is_classification or contract.score is None:
            return pd.DataFrame(index=features.index)
        found = registry.scores(model, features)
        if found is None:
            logger.warning("The model gives no probabilities: score columns left out")
            return pd.DataFrame(index=features.index)
        classes, probabilities = found
        scores = contract.score_frame(classes, probabilities)
        scores.index = features.index
        return scores

    # -- the spark engine -------------------------------------------------------------------------
    def _run_spark(self) -> Locals:
        """Read, check, score and write with Spark; the driver holds the plan, never the rows."""
        from bikes.io import spark as spark_io

        output = self.outputs.path
        local = "://" not in output
        if local:  # the folder is replaced at the end: its parent must take a sibling
            check_writable(f"{output.rstrip('/')}.write-check", "job.outputs.path")
        client = self.mlflow_service.client()
        ref = registry.resolve(client, self.resolved_model_uri)
        contract = resolve_contract(client, ref, self.contract)
        spark = spark_io.session(self.spark)
        # pandas 3 writes datetime64[ns] as parquet TIMESTAMP(NANOS), which Spark 4.3 refuses
        # ("Illegal Parquet type"); read as long nanoseconds, the timestamp is rebuilt below.
        previous = spark.conf.get(NANOS_AS_LONG, "false")
        spark.conf.set(NANOS_AS_LONG, "true")
        try:
            return self._score_on_spark(spark, ref, contract, output, local)
        finally:
            spark.conf.set(NANOS_AS_LONG, previous or "false")

    def _score_on_spark(
        self, spark: T.Any, ref: registry.ModelRef, contract: Contract, output: str, local: bool
    ) -> Locals:
        import mlflow
        from pyspark.sql import functions as F

        from bikes.io import spark as spark_io

        frame = spark_io.read_parquet(spark, self.inputs.path, "job.inputs.path")
        timestamp = contract.timestamp
        if timestamp is not None and dict(frame.dtypes).get(timestamp) == "bigint":
            micros = F.expr(f"`{timestamp}` div 1000")  # integers: a double loses nanoseconds
            frame = frame.withColumn(timestamp, F.timestamp_micros(micros).cast("timestamp_ntz"))
        if self.inputs.limit:
            frame = frame.limit(self.inputs.limit)
        rows = _check_on_spark(frame, contract, self.inputs.source)
        logger.info("Scoring {} rows with {} version {} on Spark", rows, ref.name, ref.version)
        udf = mlflow.pyfunc.spark_udf(
            spark, ref.uri, result_type=_result_type(ref, contract), env_manager="local"
        )
        kept = [
            c for c in (contract.timestamp, contract.id) if c is not None and c in frame.columns
        ]
        features = F.struct(*(F.col(name) for name in contract.feature_names))
        scores = _score_columns(spark, frame, ref, contract)
        scored = frame.select(
            *kept,
            udf(features).alias(contract.prediction),
            *([scores(features).alias("_scores")] if scores is not None else []),
            F.lit(str(ref.version)).alias(MODEL_VERSION),
        )
        if scores is not None:  # the struct's fields as the contract's score columns
            names = [c for c in scored.columns if c != "_scores"]
            at = names.index(MODEL_VERSION)
            scored = scored.select(*names[:at], "_scores.*", *names[at:])
        writer = scored.write.mode("overwrite")
        if contract.timestamp is not None and contract.timestamp in frame.columns:
            scored = scored.withColumn(EVENT_DATE, F.to_date(F.col(contract.timestamp)))
            writer = scored.write.mode("overwrite").partitionBy(EVENT_DATE)
        _write_spark(writer, output, local)
        logger.success("Wrote {} predictions to {}", rows, output)
        return {"model_version": ref.version, "rows": rows, "path": output, "engine": "spark"}


def _score_columns(
    spark: T.Any, frame: DataFrame, ref: registry.ModelRef, contract: Contract
) -> T.Any | None:
    """A pandas UDF from the features' struct to a struct of the contract's score columns (what
    ``InferenceJob._scores`` writes on the pandas engine), or None when the contract names no
    score or the model gives no probabilities.

    ``spark_udf`` only calls the pyfunc's ``predict`` (classes, for an sklearn classifier: its
    flavor takes no ``predict_method``), so this second UDF calls ``registry.scores`` itself:
    the model is downloaded once on the driver and shipped to the executors as MLflow's
    ``spark_udf`` ships it (``SparkModelCache``: a zip through ``SparkContext.addFile``, loaded
    once per Python worker). The classes, hence the columns, come from scoring one row on the
    driver, so a contract naming a class the model lacks fails before any row is scored."""
    if not contract.is_classification or contract.score is None:
        return None
    import tempfile

    import mlflow
    from mlflow.pyfunc.spark_model_cache import SparkModelCache
    from pyspark.sql import types as ST
    from pyspark.sql.pandas.functions import pandas_udf

    with tempfile.TemporaryDirectory(prefix="bikes-scores-") as where:
        local = mlflow.artifacts.download_artifacts(ref.uri, dst_path=where)
        model = mlflow.pyfunc.load_model(local)
        sample = frame.select(*contract.feature_names).limit(1).toPandas()
        found = registry.scores(model, sample)
        if found is None:
            logger.warning("The model gives no probabilities: score columns left out")
            return None
        classes = found[0]
        names = [str(c) for c in contract.score_frame(classes, found[1]).columns]
        archive = SparkModelCache.add_local_model(spark, local)  # a zip of its own
    schema = ST.StructType([ST.StructField(name, ST.DoubleType()) for name in names])

    def predict_scores(batches: T.Iterator[pd.DataFrame]) -> T.Iterator[pd.DataFrame]:
        loaded, _ = SparkModelCache.get_or_load(archive)
        for features in batches:
            answer = registry.scores(loaded, features)
            if answer is None:  # the driver's row had them: a model answering otherwise
                raise ContractError(f"{ref.uri}: gave no probabilities on Spark")
            table = contract.score_frame(*answer)
            yield table.reindex(columns=names).astype(float)

    return pandas_udf(predict_scores, schema)  # type: ignore[call-overload]


def _write_spark(writer: T.Any, output: str, local: bool) -> None:
    """A local output folder is written beside, then swapped in: a reader finds the old
    predictions or the new ones, never a half-written folder. Elsewhere (s3a://, hdfs://)
    Spark's own committer writes in place."""
    if not local:
        writer.parquet(output)
        return
    target = Path(output)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    retired = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        writer.parquet(str(staging))
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _result_type(ref: registry.ModelRef, contract: Contract) -> str:
    """spark_udf's result type: the signature's output type, else double for a regression
    and text for a classifier's classes."""
    import mlflow

    signature = mlflow.models.get_model_info(ref.uri).signature
    outputs = signature.outputs.inputs if signature and signature.outputs else []
    if len(outputs) == 1:
        kind = getattr(outputs[0], "type", None)
        name = getattr(kind, "name", str(kind))
        if name in RESULT_TYPES:
            return RESULT_TYPES[name]
    return "string" if contract.is_classification else "double"


_NUMERIC_SPARK_TYPES = ("byte", "short", "int", "bigint", "float", "double", "decimal")


def _check_on_spark(frame: DataFrame, contract: Contract, source: str) -> int:
    """The contract on a Spark frame: columns and kinds from its schema, then one aggregation
    counting each feature's missing and invalid values. Returns the row count (the same pass).
    Errors name the column, as the pandas engine's do."""
    from pyspark.sql import functions as F

    types = dict(frame.dtypes)
    missing = [f.name for f in contract.feature_list if f.name not in types]
    if missing:
        raise SchemaError(
            f"{source}: schema inputs failed validation:\n  - missing column(s): "
            f"{', '.join(missing)}"
        )
    for feature in contract.feature_list:
        kind = types[feature.name]
        if feature.kind == "numeric" and not kind.startswith(_NUMERIC_SPARK_TYPES):
            raise ContractError(
                f"{source}: column {feature.name!r} is numeric in the contract but holds "
                f"{kind} values"
            )
    checks = [F.count(F.lit(1)).alias("_rows")]
    for feature in contract.feature_list:
        checks.append(
            F.sum(_invalid(feature, types[feature.name]).cast("long")).alias(feature.name)
        )
    counts = frame.agg(*checks).first()
    assert counts is not None  # an aggregation answers one row
    rows = int(counts["_rows"])
    failing = {f.name: int(counts[f.name] or 0) for f in contract.feature_list}
    failing = {name: n for name, n in failing.items() if n}
    if failing:
        lines = [
            f"  - {name}: {n} of {rows} row(s) {_rule(contract.feature(name))}"
            for name, n in failing.items()
        ]
        raise SchemaError(f"{source}: schema inputs failed validation:\n" + "\n".join(lines))
    if rows == 0:
        raise SchemaError(f"{source}: holds no rows")
    return rows


def _invalid(feature: Feature, kind: str) -> Column:
    """True where a value breaks the feature's rules: missing (unless nullable, NaN counts as
    missing), outside ``min``/``max``, not one of ``values``."""
    from pyspark.sql import functions as F

    column = F.col(feature.name)
    missing = column.isNull()
    if kind in ("float", "double"):
        missing = missing | F.isnan(column)
    bad = F.lit(False) if feature.nullable else missing
    present = ~missing
    if feature.values is not None:
        bad = bad | (present & ~column.isin(list(feature.values)))
    if feature.min is not None:
        bad = bad | (present & (column < F.lit(feature.min)))
    if feature.max is not None:
        bad = bad | (present & (column > F.lit(feature.max)))
    return F.coalesce(bad, F.lit(False))


def _rule(feature: Feature | None) -> str:
    if feature is None:
        return "invalid"
    parts = [] if feature.nullable else ["missing"]
    if feature.values is not None:
        parts.append(f"not in {feature.values}")
    if feature.min is not None or feature.max is not None:
        parts.append(f"outside [{feature.min}, {feature.max}]")
    return "invalid (" + " or ".join(parts) + ")"
