"""bikes: MLflow-integrated evaluation, validation and monitoring for tabular models."""

import warnings

# With the spark extra installed, pandera and MLflow import pyspark, which warns on every run
# that it does not yet fully support pandas 3. The Spark paths bikes uses (spark_udf, Arrow,
# toPandas of aggregates) are tested on the locked versions: the warning says nothing to act on.
warnings.filterwarnings(
    "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
)

__version__ = "0.1.0"
