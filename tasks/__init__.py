"""Invoke tasks for every routine command: `uv run invoke --list`."""

from invoke.collection import Collection

from tasks import bench, checks, docker, jobs, tracking

ns = Collection()
for module in (checks, jobs, tracking, bench, docker):
    for task in Collection.from_module(module).tasks.values():
        ns.add_task(task)
