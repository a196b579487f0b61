"""One worker of a test cluster (run by test_cluster.py in its own process; a run without a cluster
in the test's process, through ``run``):

    python cluster_worker.py SPEC_JSON

SPEC: {"options", "batches": [batch dicts as lists], "save_dir", "restart", "steps",
"workers", "index"}: trains on exactly the given batches (this worker's rows), from the
checkpoint ``restart``, through ``bilm.training.loop``'s cluster path.
"""
import json
import sys

import numpy as np

from bilm.training.cluster import Cluster
from bilm.core.options import ModelOptions
from bilm.training.loop import RunSettings, Start, _train


class FixedBatches:
    """The same batches, in order: the data order of every run of a test is the same."""

    def __init__(self, batches):
        self.batches = [{k: (None if v is None else np.asarray(v, np.int32)) for k, v in b.items()} for b in batches]

    def iter_batches(self, batch_size, num_steps):
        for batch in self.batches:
            assert len(batch["next_token_id"]) == batch_size
            yield batch


def run(spec):
    """Train as ``spec`` says (in this process)."""
    if "dense_limit" in spec:  # to reduce the small tables of a test through the sparse path too
        import bilm.training.cluster
        bilm.training.cluster.DENSE_LIMIT = spec["dense_limit"]
    cluster = Cluster.of(spec["workers"], spec["index"]) if spec.get("workers") else None
    run = RunSettings(checkpoint_every=10 ** 6, log_every=10 ** 6, cluster=cluster, worker_timeout=spec.get("timeout", 120))
    config = ModelOptions(spec["options"], training=True)
    _train(config, FixedBatches(spec["batches"]), spec["save_dir"], spec["save_dir"], run,
           Start(restart=spec["restart"]))


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
