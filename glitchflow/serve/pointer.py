"""Which model every replica of the endpoint serves: a deployment-scoped Ray actor.

``POST /v1/reload`` reaches one replica.  That replica resolves the model URI again,
swaps its own engine and publishes the resolved registry version here with a new
generation number; every other replica polls :meth:`ModelPointer.current` every
``serve.sync_interval_s`` and loads the published version when the generation moves,
so all replicas converge on the same version (not on whatever the alias says when each
one happens to look).  ``serve deploy`` with a new ``user_config`` reaches every replica
through Serve's own ``reconfigure`` instead.
"""

from __future__ import annotations

import ray

#: name of the deployment-scoped actor (``serve.get_deployment_actor``)
POINTER = "model_pointer"


@ray.remote(num_cpus=0)
class ModelPointer:
    """The published model: ``(generation, uri)``; generation 0 = nothing published."""

    def __init__(self) -> None:
        self.generation = 0
        self.uri: str | None = None

    def publish(self, uri: str) -> int:
        """Record ``uri`` (a pinned ``models:/NAME/VERSION`` or a path); returns the new
        generation."""
        self.generation += 1
        self.uri = uri
        return self.generation

    def current(self) -> tuple[int, str | None]:
        return self.generation, self.uri
