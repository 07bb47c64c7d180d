"""The ``spark`` engine: monitoring statistics as distributed aggregations (needs PySpark).

Import it only when ``job.engine`` is ``spark``: it imports PySpark at once.
"""
