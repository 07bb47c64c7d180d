from __future__ import annotations

import typing as T

from bikes.settings import main_settings


def _undescribed(schema: dict[str, T.Any]) -> list[str]:
    """Every property of every object in a JSON schema that has no description."""
    missing = []
    objects = {"MainSettings": schema, **schema.get("$defs", {})}
    for name, definition in objects.items():
        for key, field in definition.get("properties", {}).items():
            # KIND is the discriminator: its value (a const) names the class, and the class
            # itself carries a description.
            if key != "KIND" and not field.get("description"):
                missing.append(f"{name}.{key}")
    return missing


def test_the_schema_is_a_reference_every_field_described() -> None:
    schema = main_settings().model_json_schema()
    assert _undescribed(schema) == []
    definitions = schema["$defs"]
    # the contract and its features are described where a user reads them
    assert {"task", "target", "prediction", "score", "timestamp", "id", "features"} <= set(
        definitions["Contract"]["properties"]
    )
    assert {"name", "kind", "min", "max", "values", "nullable"} <= set(
        definitions["Feature"]["properties"]
    )


def test_every_job_with_model_data_takes_a_contract_and_a_registered_model() -> None:
    definitions = main_settings().model_json_schema()["$defs"]
    for job in (
        "TrainingJob",
        "EvaluationsJob",
        "InferenceJob",
        "ServingJob",
        "TrafficJob",
        "MonitoringJob",
    ):
        assert "contract" in definitions[job]["properties"], job
        assert "registered_model" in definitions[job]["properties"], job
