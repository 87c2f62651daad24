"""The kge-server API end to end: uvicorn on a free port, a real `conveyor worker` process,
PyKEEN training TransE on its bundled Nations graph (14 countries, 55 relations, 1,992 triples).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conveyor.models import JobState
from tests.integration.harness import wait_for
from tests.kge.harness import Env, as_json, nations, running_api

pytestmark = [pytest.mark.kge, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_api(tmp_path_factory.mktemp("kge")) as running:
        yield running


@pytest.fixture(scope="module")
def trained(env: Env) -> dict[str, Any]:
    """Nations posted as JSON triples, TransE trained through the API, then indexed."""
    dataset_id = env.dataset("nations", nations())
    algorithm_id = env.algorithm(
        model="TransE", embedding_size=32, max_epochs=30, margin=1.0, learning_rate=0.02,
        batch_size=256,
    )  # fmt: skip
    r = env.http.post(f"/kge/datasets/{dataset_id}/train", params={"algorithm": algorithm_id})
    assert r.status_code == 202, r.text
    task_id = r.json()["task"]["id"]
    assert r.headers["location"] == f"/kge/tasks/{task_id}"
    busy = env.http.post(f"/kge/datasets/{dataset_id}/generate_index")
    assert busy.status_code == 409, busy.text  # the dataset is busy training
    seen = env.finish(task_id)
    index = env.http.post(f"/kge/datasets/{dataset_id}/generate_index")
    assert index.status_code == 202, index.text
    index_seen = env.finish(index.json()["task"]["id"], timeout=60)
    return {"id": dataset_id, "task": task_id, "seen": seen, "index_seen": index_seen}


def test_training_progress_rises_to_the_total_and_the_task_redirects(
    env: Env, trained: dict[str, Any]
) -> None:
    seen = trained["seen"]
    assert seen[-1]["state"] == "SUCCESS", seen[-1]
    assert {"PENDING", "STARTED"} & {s["state"] for s in seen[:-1]}
    currents = [s["progress"]["current"] for s in seen if "progress" in s]
    assert currents == sorted(currents), currents  # never goes back
    assert len(set(currents)) >= 3  # several epochs were seen on the way
    final = seen[-1]["progress"]
    assert final["current"] == final["total"] == 30
    assert {"current_steps", "total_steps"} <= set(final)
    r = env.http.get(f"/kge/tasks/{trained['task']}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/kge/datasets/{trained['id']}"
    job = env.store.get(trained["task"])
    assert job.kind == "kge.train" and job.state is JobState.SUCCEEDED  # an ordinary job
    assert trained["index_seen"][-1]["state"] == "SUCCESS"


def test_the_model_beats_a_random_ranker_on_held_out_triples(
    env: Env, trained: dict[str, Any]
) -> None:
    dataset = env.http.get(f"/kge/datasets/{trained['id']}").json()["dataset"]
    assert (dataset["status"], dataset["status_name"]) == (6, "indexed")  # trained | indexed
    assert (dataset["triples"], dataset["entities"], dataset["relations"]) == (1992, 14, 55)
    metrics = dataset["metrics"]
    print(f"\nNations TransE: {metrics}")
    assert metrics["test_triples"] >= 150
    assert metrics["mrr"] > 1.3 * metrics["random_mrr"], metrics
    assert metrics["hits_at_10"] > metrics["random_hits_at_10"], metrics


def embeddings(env: Env, dataset_id: int, names: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    r = env.http.post(f"/kge/datasets/{dataset_id}/embeddings", json={"entities": names})
    assert r.status_code == 200, r.text
    return {name: np.asarray(vector) for name, vector in r.json()["embeddings"]}


def test_index_agrees_with_exact_search_and_distances_match_embeddings(
    env: Env, trained: dict[str, Any]
) -> None:
    dataset_id = trained["id"]
    entities = sorted({t[0] for t in nations()} | {t[2] for t in nations()})
    vectors = embeddings(env, dataset_id, entities)
    assert all(v.shape == (32,) for v in vectors.values())
    overlap = []
    for entity in entities:
        r = env.http.get(f"/kge/datasets/{dataset_id}/similar_entities/{entity}?limit=9")
        assert r.status_code == 200, r.text
        answer = r.json()["similar_entities"]
        # The original's shape and count: limit + 1 entities, the entity itself first.
        assert answer["entity"] == {"value": entity, "type": "uri"}
        assert (answer["limit"], answer["search_k"], len(answer["response"])) == (10, -1, 10)
        got = [(x["distance"], x["entity"]) for x in answer["response"]]
        exact = sorted((float(np.linalg.norm(vectors[e] - vectors[entity])), e) for e in entities)
        overlap.append(len({e for _, e in got} & {e for _, e in exact[:10]}) / 10)
        assert got[0][1] == entity and got[0][0] == pytest.approx(0, abs=1e-3)
        for d, e in got:  # the index's distances are the embeddings' distances
            assert d == pytest.approx(float(np.linalg.norm(vectors[e] - vectors[entity])), abs=1e-3)
    assert sum(overlap) / len(overlap) >= 0.9, overlap
    r = env.http.post(f"/kge/datasets/{dataset_id}/distance", json={"distance": ["usa", "ussr"]})
    assert r.status_code == 200, r.text
    expected = float(np.linalg.norm(vectors["usa"] - vectors["ussr"]))
    assert r.json()["distance"] == pytest.approx(expected, rel=1e-5)
    by_vector = env.http.post(
        f"/kge/datasets/{dataset_id}/similar_entities?limit=3",
        json={"entity": {"value": vectors["china"].tolist(), "type": "embedding"}},
    )
    assert by_vector.status_code == 200, by_vector.text
    nearest = by_vector.json()["similar_entities"]
    assert nearest["response"][0]["entity"] == "china" and nearest["limit"] == 4
    assert nearest["entity"] == {"value": vectors["china"].tolist(), "type": "embedding"}
    with_k = env.http.get(f"/kge/datasets/{dataset_id}/similar_entities/usa?limit=2&search_k=50")
    assert with_k.json()["similar_entities"]["search_k"] == 50
    suggest = env.http.post(f"/kge/datasets/{dataset_id}/suggest_name", json={"input": "bra"})
    assert [s["entity"]["entity"] for s in suggest.json()] == ["brazil"]


def test_bad_input_is_named(env: Env, trained: dict[str, Any]) -> None:
    dataset_id = trained["id"]
    r = env.http.post(
        f"/kge/datasets/{dataset_id}/embeddings", json={"entities": ["usa", "atlantis"]}
    )
    assert r.status_code == 404 and "atlantis" in r.json()["detail"]
    assert r.json()["entities"] == ["atlantis"]
    r = env.http.get(f"/kge/datasets/{dataset_id}/similar_entities/atlantis")
    assert r.status_code == 404 and "atlantis" in r.json()["detail"]
    for value in ([0.5] * 5, "usa"):  # a vector of the wrong size; a URI sent as an embedding
        r = env.http.post(f"/kge/datasets/{dataset_id}/similar_entities",
                          json={"entity": {"value": value, "type": "embedding"}})  # fmt: skip
        assert r.status_code == 422 and "32 numbers" in r.json()["detail"], r.text
    r = env.http.post(f"/kge/datasets/{dataset_id}/similar_entities",
                      json={"entity": {"value": [1.0], "type": "uri"}})  # fmt: skip
    assert r.status_code == 422, r.text

    fresh = env.dataset("bad-input")
    body = "a\tb\tc\nonly two\tterms\nd\te\tf\n\t\tx\n"
    r = env.http.post(
        f"/kge/datasets/{fresh}/triples", content=body,
        headers={"content-type": "text/tab-separated-values"},
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert [x["line"] for x in r.json()["lines"]] == [2, 4]
    assert env.http.get(f"/kge/datasets/{fresh}").json()["dataset"]["triples"] == 0  # all or none
    algorithm_id = env.algorithm(model="TransE", embedding_size=8, max_epochs=1)
    r = env.http.post(f"/kge/datasets/{fresh}/train", params={"algorithm_id": algorithm_id})
    assert r.status_code == 409 and "no triples" in r.json()["detail"]
    r = env.http.post(f"/kge/datasets/{fresh}/embeddings", json={"entities": ["a"]})
    assert r.status_code == 409  # untrained
    for absurd in (
        {"max_epochs": 10**9}, {"embedding_size": 0}, {"margin": -1},
        {"learning_rate": 50}, {"model": "NotAModel"},
    ):  # fmt: skip
        r = env.http.post("/kge/algorithms/", json={"algorithm": absurd})
        assert r.status_code == 422, (absurd, r.text)
    assert env.http.post(f"/kge/datasets/{fresh}/train?algorithm_id=999").status_code == 404
    assert env.http.post(f"/kge/datasets/{fresh}/train").status_code == 400
    assert env.http.get("/kge/datasets/999").status_code == 404
    assert env.http.get("/kge/tasks/not-a-task").status_code == 404
    again = env.http.post("/kge/datasets/", json={"name": "bad-input"})
    assert again.status_code == 409
    r = env.http.post(f"/kge/datasets/{dataset_id}/triples", json=as_json([("a", "b", "c")]))
    assert r.status_code == 409  # trained datasets take no more triples


def test_cancel_mid_training_leaves_the_dataset_untrained(env: Env) -> None:
    dataset_id = env.dataset("cancelled", nations())
    algorithm_id = env.algorithm(model="DistMult", embedding_size=16, max_epochs=2000)
    r = env.http.post(f"/kge/datasets/{dataset_id}/train", params={"algorithm_id": algorithm_id})
    assert r.status_code == 202, r.text
    task_id = r.json()["task"]["id"]
    wait_for(lambda: env.task(task_id).get("progress", {}).get("current", 0) >= 2, 120, 0.05)
    assert env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]["task"]["id"] == task_id
    assert env.http.delete(f"/kge/tasks/{task_id}").status_code == 204
    seen = env.finish(task_id, timeout=60)
    assert seen[-1]["state"] == "REVOKED"
    job = env.store.get(task_id)
    assert job.state is JobState.CANCELLED
    assert job.progress is not None and job.progress.current < 2000
    dataset = env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]
    assert dataset["status"] == 0 and dataset["task"] is None
    r = env.http.post(f"/kge/datasets/{dataset_id}/embeddings", json={"entities": ["usa"]})
    assert r.status_code == 409  # no partial model is served
    assert env.http.delete(f"/kge/tasks/{task_id}").status_code == 409  # already ended


def test_import_ntriples_file_through_a_job(env: Env) -> None:
    dataset_id = env.dataset("imported")
    ex = "http://example.org/"
    lines = [
        f"<{ex}alice> <{ex}knows> <{ex}bob> .",
        f"<{ex}bob> <{ex}knows> <{ex}carol> .",
        f'<{ex}alice> <http://www.w3.org/2000/01/rdf-schema#label> "Alice" .',
    ]
    r = env.http.post(
        f"/kge/datasets/{dataset_id}/import?format=nt", content="\n".join(lines).encode()
    )
    assert r.status_code == 202, r.text
    assert env.finish(r.json()["task"]["id"], timeout=60)[-1]["state"] == "SUCCESS"
    dataset = env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]
    assert (dataset["triples"], dataset["entities"], dataset["relations"]) == (2, 3, 1)
    # train briefly: label search finds alice by her imported rdfs:label, bob by his URI
    algorithm_id = env.algorithm(model="TransE", embedding_size=4, max_epochs=2, batch_size=2)
    r = env.http.post(f"/kge/datasets/{dataset_id}/train", params={"algorithm_id": algorithm_id})
    assert env.finish(r.json()["task"]["id"], timeout=90)[-1]["state"] == "SUCCESS"
    alice = env.http.post(f"/kge/datasets/{dataset_id}/suggest_name", json={"input": "ali"})
    assert alice.json() == [
        {"text": "Alice", "entity": {"label": "Alice", "alt_label": [], "description": "",
                                     "entity": f"{ex}alice"}}
    ]  # fmt: skip
    bob = env.http.post(f"/kge/datasets/{dataset_id}/suggest_name", json={"input": "bo"})
    assert [s["entity"]["entity"] for s in bob.json()] == [f"{ex}bob"]
    # The original's autocomplete index: a job builds the table suggest_name then reads.
    r = env.http.post(f"/kge/datasets/{dataset_id}/generate_autocomplete_index",
                      json={"langs": ["en", "es"]})  # fmt: skip
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/kge/tasks/{r.json()['task']['id']}"
    assert env.finish(r.json()["task"]["id"], timeout=60)[-1]["state"] == "SUCCESS"
    dataset = env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]
    assert dataset["status"] == 2 | 8  # trained, search-indexed
    again = env.http.post(f"/kge/datasets/{dataset_id}/suggest_name", json={"input": "ali"})
    assert again.json() == alice.json()
    for bad_langs in ({}, {"langs": "en"}, {"langs": ["English"]}):
        r = env.http.post(f"/kge/datasets/{dataset_id}/generate_autocomplete_index",
                          json=bad_langs)  # fmt: skip
        assert r.status_code == 422, (bad_langs, r.text)
    bad = env.http.post(
        f"/kge/datasets/{dataset_id}/import?format=nt&ignore_status=true",
        content=b"<a> <b> .\nnot rdf\n",
    )
    last = env.finish(bad.json()["task"]["id"], timeout=60)[-1]
    assert last["state"] == "FAILURE" and "line 1" in last["error"]["exception"]
    assert "line 2" in last["error"]["exception"]


def test_python_client_runs_kge_train_as_an_ordinary_job(env: Env, tmp_path: Path) -> None:
    """The tutorial's Python-client path: submit `kge.train` with the triples file, follow
    its progress events, download the vectors."""
    import json

    import conveyor

    tsv = tmp_path / "nations.tsv"
    tsv.write_text("".join(f"{s}\t{p}\t{o}\n" for s, p, o in nations()))
    client = conveyor.Client(str(env.http.base_url))
    job = client.submit(
        "kge.train",
        {"model": "ComplEx", "embedding_size": 8, "max_epochs": 3, "learning_rate": 0.02},
        files={"triples.tsv": tsv},
    )
    job = client.wait(job.id, timeout=120)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.result is not None and job.result["epochs"] == 3
    epochs = [e.data["current"] for e in client.events(job.id) if e.type == "progress"]
    assert epochs == sorted(epochs) and epochs[-1] == 3
    vectors = np.load(
        client.download(job.id, "entity_embeddings.npy", tmp_path), allow_pickle=False
    )
    entities = json.loads(client.download(job.id, "entities.json", tmp_path).read_text())
    assert vectors.shape == (14, 16) and len(entities) == 14  # complex: [real, imaginary]
    client.close()


def test_worker_child_killed_mid_training_is_retried_and_completes(env: Env) -> None:
    import os
    import signal

    from tests.integration.harness import children

    dataset_id = env.dataset("killed", nations())
    algorithm_id = env.algorithm(model="TransE", embedding_size=8, max_epochs=15)
    r = env.http.post(f"/kge/datasets/{dataset_id}/train", params={"algorithm_id": algorithm_id})
    task_id = r.json()["task"]["id"]
    wait_for(lambda: env.task(task_id).get("progress", {}).get("current", 0) >= 2, 120, 0.05)
    busy = wait_for(lambda: children(env.worker.pid), 10)
    for pid in busy:  # the child training the job dies; the supervisor holds the lease
        os.kill(pid, signal.SIGKILL)
    seen = env.finish(task_id, timeout=150)
    assert seen[-1]["state"] == "SUCCESS", seen[-1]
    job = env.store.get(task_id)
    assert job.attempt == 2 and job.result is not None and job.result["epochs"] == 15
    dataset = env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]
    assert (dataset["status"], dataset["status_name"]) == (2, "trained")


def test_triples_body_formats(env: Env) -> None:
    dataset_id = env.dataset("formats")
    plain = env.http.post(f"/kge/datasets/{dataset_id}/triples", content=b"a\tb\tc\n")
    assert plain.status_code == 202, plain.text  # no content type: tab-separated lines
    nt = env.http.post(
        f"/kge/datasets/{dataset_id}/triples",
        content=b"<http://x/a> <http://x/p> <http://x/d> .\n",
        headers={"content-type": "application/n-triples"},
    )
    assert nt.status_code == 202, nt.text
    broken = env.http.post(
        f"/kge/datasets/{dataset_id}/triples", content=b'{"triples": [',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["detail"]
    bad_json = env.http.post(
        f"/kge/datasets/{dataset_id}/triples",
        json={"triples": [{"subject": {"value": "a"}, "predicate": {"value": "b"}}]},
    )
    assert bad_json.status_code == 400 and bad_json.json()["lines"][0]["line"] == 1
    dataset = env.http.get(f"/kge/datasets/{dataset_id}").json()["dataset"]
    assert (dataset["triples"], dataset["entities"]) == (2, 4)


def test_the_originals_shapes_and_ids_that_are_never_reused(env: Env) -> None:
    """GET /datasets/ items are {"dataset": {...}}; /algorithms/ a bare list, one a bare
    object; status an integer; a deleted dataset's id is never given again."""
    first = env.dataset("shapes-1")
    listed = env.http.get("/kge/datasets/").json()
    mine = [d["dataset"] for d in listed if d["dataset"]["id"] == first]
    assert mine and mine[0]["status"] == 0 and mine[0]["name"] == "shapes-1"
    algorithms = env.http.get("/kge/algorithms/").json()
    assert isinstance(algorithms, list) and {"id", "embedding_size"} <= set(algorithms[0])
    one = env.http.get(f"/kge/algorithms/{algorithms[0]['id']}").json()
    assert one == algorithms[0]
    assert env.http.get("/kge/algorithms/9999").status_code == 404
    untrained = env.http.post(f"/kge/datasets/{first}/generate_autocomplete_index",
                              json={"langs": ["en"]})  # fmt: skip
    assert untrained.status_code == 409  # nothing trained to search yet

    r = env.http.post(f"/kge/datasets/{first}/import?format=tsv", content=b"a\tb\tc\n")
    task_id = r.json()["task"]["id"]
    assert env.finish(task_id, timeout=60)[-1]["state"] == "SUCCESS"
    done = env.http.get(f"/kge/tasks/{task_id}", follow_redirects=False)
    assert (done.status_code, done.headers["location"]) == (303, f"/kge/datasets/{first}")
    assert env.http.delete(f"/kge/datasets/{first}").status_code == 204
    second = env.dataset("shapes-2")
    assert second > first  # the deleted dataset's id stays retired
    orphan = env.http.get(f"/kge/tasks/{task_id}", follow_redirects=False)
    assert orphan.status_code == 200 and "location" not in orphan.headers
    assert orphan.json()["task"]["state"] == "SUCCESS"
