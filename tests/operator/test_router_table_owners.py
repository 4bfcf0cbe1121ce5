"""The router's model table (ConfigMap harmony-router-models) is owned by the SpeechModels and SpeechRoutes of its
namespace, so Kubernetes deletes it with the last of them, with or without the operator (``helm uninstall``)."""

from __future__ import annotations

from typing import Any

import aiohttp

from harmony_operator import manifests
from tests.operator.harness import NAMESPACE, eventually, quiet, running_operator, stored
from tests.operator.test_operator import BASE, CONFIGMAPS, create, model

TABLE = "harmony-router-models"
ROUTE = {"apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechRoute",
         "metadata": {"name": "transcribe", "namespace": NAMESPACE, "uid": "uid-route", "resourceVersion": "1"},
         "spec": {"task": "stt", "steps": [{"name": "stt", "task": "stt", "model": "whisper-small"}]}}


def owners(cluster: Any) -> list[tuple[str, str, str]]:
    table = stored(cluster, CONFIGMAPS, TABLE) or {}
    return [(o["kind"], o["name"], o["uid"]) for o in table.get("metadata", {}).get("ownerReferences", [])]


def listed_models_after(cluster: Any, seen: int) -> bool:
    """The operator listed the SpeechModels (not a watch) after kmock's first ``seen`` requests."""
    return any(r.method == "GET" and r.url.path.endswith("/speechmodels") and r.params.get("watch") != "true"
               and r.headers.get("User-Agent", "").startswith(("kopf/", "OpenAPI-Generator"))
               for r in list(cluster)[seen:])


async def delete(api: aiohttp.ClientSession, url: str) -> None:
    async with api.delete(url) as response:
        assert response.status < 300, await response.text()


async def test_the_table_is_owned_by_every_model_and_route(cluster: Any, api: aiohttp.ClientSession) -> None:
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await create(api, "speechmodels", model("whisper-base", "uid-base"))
        await create(api, "speechroutes", ROUTE)
        await eventually(lambda: owners(cluster) == [
            ("SpeechModel", "whisper-base", "uid-base"), ("SpeechModel", "whisper-small", "uid-small"),
            ("SpeechRoute", "transcribe", "uid-route")], what="three owners")
        references = stored(cluster, CONFIGMAPS, TABLE)["metadata"]["ownerReferences"]
        assert all(r["apiVersion"] == "harmony.dev/v1alpha1" and "controller" not in r
                   and "blockOwnerDeletion" not in r for r in references)

        await delete(api, f"{BASE}/speechmodels/whisper-base")
        await eventually(lambda: [o[1] for o in owners(cluster)] == ["whisper-small", "transcribe"],
                         what="the deleted model no longer an owner")


async def test_with_nothing_left_the_table_is_not_written_again(cluster: Any, api: aiohttp.ClientSession) -> None:
    """The garbage collector deletes the table with its last owner (kmock has none: the test deletes it as the
    collector would); the operator must not put back an ownerless table that would outlive the release."""
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await eventually(lambda: owners(cluster), what="an owned table")
        seen = len(list(cluster))
        await delete(api, f"{BASE}/speechmodels/whisper-small")
        # the collector deletes the table once the owner is gone; a write from the operator's listing of before
        # the delete would be collected again, so the operator must first have listed the models without it
        await eventually(lambda: listed_models_after(cluster, seen), what="the models listed after the delete")
        await quiet(cluster, for_s=0.5)
        await delete(api, f"/api/v1/namespaces/{NAMESPACE}/configmaps/{TABLE}")
        await quiet(cluster, for_s=0.5)
        assert stored(cluster, CONFIGMAPS, TABLE) is None

        await create(api, "speechmodels", model("whisper-base", "uid-base"))  # a model again: a table again
        await eventually(lambda: owners(cluster) == [("SpeechModel", "whisper-base", "uid-base")], what="new table")


def test_table_owners_skip_objects_without_a_uid() -> None:
    items = [{"metadata": {"name": "b", "uid": "u-b"}}, {"metadata": {"name": "a", "uid": "u-a"}},
             {"metadata": {"name": "c"}}]
    assert [o["name"] for o in manifests.table_owners(items, [])] == ["a", "b"]
