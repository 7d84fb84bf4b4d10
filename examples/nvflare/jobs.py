"""The jobs of .ci/nvflare-e2e, built with FLARE's job API (nvflare.job_config.api.FedJob):

- ``numpy_sag``: scatter-and-gather over nvflare.app_common.np (each client adds 1 to the
  model per round; the server's global model after N rounds is the initial one + N);
- ``adversary``: the same server app, and a client app whose executor attacks the workspace
  (examples/nvflare/adversary.py) instead of training.

Every job names its container image in meta.json's ``launcher_spec`` (FLARE's Docker
launcher's rule), for every site.
"""

import json
import os

from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import (
    InTimeAccumulateWeightedAggregator,
)
from nvflare.app_common.np.np_model_persistor import NPModelPersistor
from nvflare.app_common.np.np_trainer import NPTrainer
from nvflare.app_common.shareablegenerators.full_model_shareable_generator import (
    FullModelShareableGenerator,
)
from nvflare.app_common.workflows.scatter_and_gather import ScatterAndGather
from nvflare.job_config.api import FedJob

HERE = os.path.dirname(os.path.abspath(__file__))
INITIAL = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def _server(job, rounds, min_clients):
    job.to_server(NPModelPersistor(model=INITIAL), id="persistor")
    job.to_server(FullModelShareableGenerator(), id="shareable_generator")
    job.to_server(InTimeAccumulateWeightedAggregator(expected_data_kind="WEIGHTS"),
                  id="aggregator")
    job.to_server(ScatterAndGather(min_clients=min_clients, num_rounds=rounds,
                                   wait_time_after_min_received=0, train_timeout=600,
                                   persistor_id="persistor"))


def _export(job, out_dir, image, python_path):
    job.export_job(out_dir)
    job_dir = os.path.join(out_dir, job.name)
    meta_path = os.path.join(job_dir, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["launcher_spec"] = {"default": {"docker": {"image": image, "python_path": python_path}}}
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    return job_dir


def numpy_sag(out_dir, name, clients, rounds, image, python_path):
    job = FedJob(name=name, min_clients=len(clients))
    _server(job, rounds, len(clients))
    for site in clients:
        job.to(NPTrainer(delta=1), site, tasks=["train"])
    return _export(job, out_dir, image, python_path)


def adversary(out_dir, name, clients, attack, image, python_path, victim_dir=""):
    """One round; every client runs the attack."""
    import sys
    sys.path.insert(0, HERE)
    from adversary import AdversaryExecutor

    job = FedJob(name=name, min_clients=len(clients))
    _server(job, 1, len(clients))
    for site in clients:
        job.to(AdversaryExecutor(attack=attack, victim_dir=victim_dir), site, tasks=["train"])
    return _export(job, out_dir, image, python_path)
