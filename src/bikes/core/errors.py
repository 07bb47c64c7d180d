"""Errors that carry their culprit, so the CLI can map them to exit codes in one place.

``BikesError`` subclasses are expected failures (bad config, bad data, missing model);
anything else reaching the CLI is a bug and earns a traceback.
"""


class BikesError(Exception):
    """Base of every expected failure: the message alone must tell the user what to fix."""


class ConfigError(BikesError):
    """A configuration key is missing, unknown or has a wrong value; the message names the key."""


class InputError(BikesError):
    """An input (file, dataset, model URI) is missing or invalid; the message names it."""


class SchemaError(InputError):
    """A dataset violates its schema; the message lists every failing column and a few rows."""


class MonitoringFindingError(BikesError):
    """A monitoring finding at or above ``job.fail_on``: a distinct exit code for cron and CI."""


class PromotionConflictError(BikesError):
    """The champion moved while the gate ran: nothing was promoted; re-run the gate against the
    new champion."""


class AlertDeliveryError(BikesError):
    """Alerts fired but their channel refused them; they stay undelivered and are retried on
    the next run."""


class CaptureLossError(BikesError):
    """The service stopped with acknowledged rows it could keep neither in the store nor in
    the spool; the message says how many and where they were meant to go."""


def first_line(error: BaseException) -> str:
    """The gist of a third-party error, whose full text can run to pages (MLflow's does)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ContractError(ConfigError):
    """The data contract contradicts itself, the model's signature or the data; names the column."""
