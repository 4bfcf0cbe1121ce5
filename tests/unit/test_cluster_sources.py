"""Which of the router's cluster sources its flags turn on (services/router/cluster/sources.py): the chart passes
the namespaces served whenever the router watches EndpointSlices, and only --watch-models (or a selector) makes it
read the model table through the API, which its RBAC grants only then."""

from __future__ import annotations

import httpx

from services.router.cluster.sources import cluster_sources
from services.router.routing import ModelTable


def _sources(tmp_path, **flags):
    client = httpx.AsyncClient(base_url="http://127.0.0.1:9")  # never called while the sources are made
    return cluster_sources(ModelTable(), str(tmp_path / "models.yaml"), 1.0, client=client, own="harmony", **flags)


def test_endpoint_slices_in_listed_namespaces_keep_the_mounted_model_table(tmp_path):
    sources = _sources(tmp_path, watch_endpoints=True, namespaces=["team-a", "team-b"])
    assert sources.models is None and sources.sync is not None
    assert sorted(w.what for w in sources.watches) == ["EndpointSlice", "EndpointSlice"]


def test_watch_models_reads_the_tables_of_every_namespace_through_the_api(tmp_path):
    sources = _sources(tmp_path, watch_models=True, watch_endpoints=True, namespaces=["team-a", "team-b"])
    assert sources.models is not None and sources.sync is None
    assert sorted(w.what for w in sources.watches) == ["ConfigMap", "ConfigMap", "EndpointSlice", "EndpointSlice"]
