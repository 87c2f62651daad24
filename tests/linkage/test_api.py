"""The entity-service API's answers to bad input, tokens and deletion (plain HTTP)."""

from __future__ import annotations

import base64
import json
import os
import random
from typing import Any

import pytest

from conveyor.models import JobFilter, JobState
from tests.integration.harness import wait_for
from tests.linkage.conftest import SCHEMA, Env, client_python

pytestmark = pytest.mark.timeout(120)


def clks(n: int, size: int = 128, seed: int = 0) -> list[str]:
    rng = __import__("random").Random(seed)
    return [base64.b64encode(rng.randbytes(size)).decode() for _ in range(n)]


def project(env: Env, result_type: str = "groups", **extra: Any) -> dict[str, Any]:
    body = {"schema": json.loads(SCHEMA.read_text()), "result_type": result_type, **extra}
    r = env.http.post("/api/v1/projects", json=body)
    assert r.status_code == 201, r.text
    creds: dict[str, Any] = r.json()
    assert len(creds["update_tokens"]) == extra.get("number_parties", 2)
    assert all(len(t) == 48 for t in [*creds["update_tokens"], creds["result_token"]])
    return creds


def test_status_version_and_listing(env: Env) -> None:
    assert env.http.get("/api/v1/status").json()["status"] == "ok"
    version = env.http.get("/api/v1/version").json()
    assert set(version) == {"anonlink", "entityservice", "python"}
    creds = project(env)
    listed = env.http.get("/api/v1/projects").json()
    assert [p["project_id"] for p in listed] == [creds["project_id"]]
    assert env.http.get("/api/v1/status").json()["project_count"] == 1
    r = env.http.get(f"/api/v1/projects/{creds['project_id']}",
                     headers={"Authorization": creds["result_token"]})  # fmt: skip
    assert r.json()["parties_contributed"] == 0 and r.json()["number_parties"] == 2


def test_missing_project_or_run_and_bad_token_are_403(env: Env) -> None:
    creds = project(env)
    pid, token = creds["project_id"], creds["result_token"]
    for path in (f"/api/v1/projects/{'0' * 48}", f"/api/v1/projects/{pid}",
                 f"/api/v1/projects/{pid}/runs/{'1' * 48}/status"):  # fmt: skip
        assert env.http.get(path, headers={"Authorization": "wrong"}).status_code == 403, path
    r = env.http.get(f"/api/v1/projects/{pid}/runs/{'1' * 48}/status",
                     headers={"Authorization": token})  # fmt: skip
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert env.http.get(f"/api/v1/projects/{'0' * 48}/runs",
                        headers={"Authorization": token}).status_code == 403  # fmt: skip


def test_bad_uploads_and_thresholds_are_400_and_token_reuse_403(env: Env) -> None:
    creds = project(env)
    pid, (t0, t1) = creds["project_id"], creds["update_tokens"]
    url = f"/api/v1/projects/{pid}/clks"
    cases = [
        ({"clks": clks(3, 128)[:2] + clks(1, 64)}, "same size"),
        ({"clks": clks(3, 64)}, "expects 128 bytes"),  # the schema says 1024 bits
        ({"clks": ["not base64!!"]}, "not valid base64"),
        ({"clks": []}, "empty"),
        ({"nothing": 1}, "'clks'"),
    ]
    for body, message in cases:
        r = env.http.post(url, json=body, headers={"Authorization": t0})
        assert r.status_code == 400, (body, r.text)
        assert message in r.json()["detail"], r.json()
    r = env.http.post(url, content=b"{nope", headers={"Authorization": t0})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    assert env.http.post(url, json={"clks": clks(2)}).status_code == 401
    assert env.http.post(f"/api/v1/projects/{pid}/binaryclks", content=b"x").status_code == 401
    r = env.http.post("/api/v1/projects", content=b"{nope")
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = env.http.post(f"/api/v1/projects/{pid}/runs", content=b"{nope",
                      headers={"Authorization": creds["result_token"]})  # fmt: skip
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]

    ok = env.http.post(url, json={"clks": clks(5)}, headers={"Authorization": t0})
    assert ok.status_code == 201 and ok.json()["message"] == "Updated"
    again = env.http.post(url, json={"clks": clks(5)}, headers={"Authorization": t0})
    assert again.status_code == 403
    assert again.json()["detail"] == "This token has already been used to upload clks."

    binary = b"".join(base64.b64decode(c) for c in clks(4, seed=1))
    r = env.http.post(f"/api/v1/projects/{pid}/binaryclks", content=binary[:-1],
                      headers={"Authorization": t1, "Hash-Count": "4", "Hash-Size": "128",
                               "Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 400 and "Hash-Count" in r.json()["detail"]
    r = env.http.post(f"/api/v1/projects/{pid}/binaryclks", content=binary,
                      headers={"Authorization": t1, "Hash-Count": "4", "Hash-Size": "128",
                               "Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert len(r.json()["receipt_token"]) == 48

    runs = f"/api/v1/projects/{pid}/runs"
    auth = {"Authorization": creds["result_token"]}
    for threshold in (0, -0.1, 1.5, "high", None):
        r = env.http.post(runs, json={"threshold": threshold}, headers=auth)
        assert r.status_code == 400 and "threshold" in r.json()["detail"], threshold
    r = env.http.post(runs, json={"threshold": 1.0, "name": "edge"}, headers=auth)
    assert r.status_code == 201 and r.json()["threshold"] == 1.0


def test_project_validation_and_external_upload_error(env: Env) -> None:
    r = env.http.post("/api/v1/projects", json={"schema": {}, "result_type": "permutations",
                                                "number_parties": 3})  # fmt: skip
    assert r.status_code == 400 and "groups" in r.json()["detail"]
    r = env.http.post("/api/v1/projects", json={"schema": {}, "result_type": "nope"})
    assert r.status_code == 400
    creds = project(env)
    r = env.http.get(f"/api/v1/projects/{creds['project_id']}/authorize-external-upload",
                     headers={"Authorization": creds["update_tokens"][0]})  # fmt: skip
    assert r.status_code == 500 and "cannot issue temporary" in r.json()["detail"]


def test_run_waits_for_clks_then_result_404_until_complete(env: Env) -> None:
    creds = project(env, number_parties=3)
    pid, auth = creds["project_id"], {"Authorization": creds["result_token"]}
    run = env.http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": 0.8}, headers=auth)
    run_id = run.json()["run_id"]
    base = f"/api/v1/projects/{pid}/runs/{run_id}"
    status = env.http.get(f"{base}/status", headers=auth).json()
    assert status["state"] == "created"
    assert status["current_stage"]["description"] == "waiting for CLKs"
    env.http.post(f"/api/v1/projects/{pid}/clks", json={"clks": clks(3)},
                  headers={"Authorization": creds["update_tokens"][0]})  # fmt: skip
    progress = env.http.get(f"{base}/status", headers=auth).json()["current_stage"]["progress"]
    assert progress["absolute"] == 1 and progress["relative"] == pytest.approx(1 / 3)
    r = env.http.get(f"{base}/result", headers=auth)
    assert r.status_code == 404 and r.json()["detail"] == "run is not complete"
    listed = env.http.get(f"/api/v1/projects/{pid}/runs", headers=auth).json()
    assert listed == [{"run_id": run_id, "time_added": status["time_added"], "state": "created"}]


def test_deleting_a_running_run_cancels_its_sub_jobs(env: Env) -> None:
    creds = project(env)
    pid, auth = creds["project_id"], {"Authorization": creds["result_token"]}
    # 12,000 x 12,000 = 144M comparisons in 480 chunks: far from done when deleted, even when a
    # loaded machine is slow to answer the delete (6,000 x 6,000 once saw 74 of 120 done).
    for n, token in enumerate(creds["update_tokens"]):
        r = env.http.post(f"/api/v1/projects/{pid}/clks", json={"clks": clks(12000, seed=n)},
                          headers={"Authorization": token})  # fmt: skip
        assert r.status_code == 201
    run_id = env.http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": 0.9},
                           headers=auth).json()["run_id"]  # fmt: skip
    tag = f"linkage-run:{run_id}"
    env.worker("--concurrency", "2")
    wait_for(lambda: env.store.list_jobs(JobFilter(tag=tag, state=[JobState.SUCCEEDED])).jobs,
             timeout=60)  # fmt: skip
    status = env.http.get(f"/api/v1/projects/{pid}/runs/{run_id}/status", headers=auth).json()
    assert status["state"] == "running" and status["current_stage"]["number"] == 2
    assert 0 < status["current_stage"]["progress"]["absolute"] < 144_000_000
    assert env.http.delete(f"/api/v1/projects/{pid}/runs/{run_id}", headers=auth).status_code == 204

    def settled() -> bool:
        jobs = env.store.list_jobs(JobFilter(tag=tag), limit=500).jobs
        return all(j.state.is_final for j in jobs)

    wait_for(settled, timeout=30)
    jobs = env.store.list_jobs(JobFilter(tag=tag), limit=500).jobs
    states = [j.state for j in jobs]
    assert states.count(JobState.CANCELLED) > len(jobs) // 2
    assert not any(j.kind == "linkage.solve" for j in jobs)
    r = env.http.get(f"/api/v1/projects/{pid}/runs/{run_id}/status", headers=auth)
    assert r.status_code == 403
    assert os.environ.get("CONVEYOR_LINKAGE_CHUNK_COMPARISONS") == "300000"


RETRYING_CLIENT = """
import json, sys
from anonlinkclient.rest_client import ClientWaitingConfiguration, RestClient
rc = RestClient(sys.argv[1], ClientWaitingConfiguration(100, 1000, 20000))
print(json.dumps([rc.server_get_status()["status"] for _ in range(12)]))
"""


def test_rate_limited_clients_get_503_and_the_real_client_retries(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_LINKAGE_RATE_LIMIT", "4")
    answers = [env.http.get("/api/v1/status") for _ in range(12)]
    codes = [a.status_code for a in answers]
    assert codes[0] == 200 and 503 in codes
    limited = answers[codes.index(503)]
    assert limited.headers["retry-after"] == "1"
    assert "Rate limit" in limited.json()["detail"]
    # anonlink-client retries 503 with exponential backoff: every call ends up answered.
    assert client_python(RETRYING_CLIENT, env.url) == ["ok"] * 12


def test_blocked_run_matches_anonlink_with_the_same_blocks(env: Env) -> None:
    from anonlink.candidate_generation import find_candidate_pairs
    from anonlink.similarities import dice_coefficient_accelerated
    from anonlink.solving import greedy_solve
    from bitarray import bitarray

    rng = random.Random(5)
    n = 800
    a = [rng.randbytes(128) for _ in range(n)]
    # B: A's records with ~6% of the bits flipped, shuffled; some near-duplicates across blocks.
    order = list(range(n))
    rng.shuffle(order)
    b = [bytes(x ^ (rng.random() < 0.5 and 1 << rng.randrange(8)) for x in a[e]) for e in order]
    # Every record sits in its entity's block, and one in five also in a shared second block,
    # so some pairs are found in two chunks and must be counted once.
    blocks_a = {i: [f"k{i % 40}", *(["extra"] if i % 5 == 0 else [])] for i in range(n)}
    blocks_b = {j: [f"k{e % 40}", *(["extra"] if e % 5 == 0 else [])] for j, e in enumerate(order)}
    creds = project(env, uses_blocking=True)
    pid = creds["project_id"]
    for token, rows, blocks in ((creds["update_tokens"][0], a, blocks_a),
                                (creds["update_tokens"][1], b, blocks_b)):  # fmt: skip
        body = {"encodings": [base64.b64encode(r).decode() for r in rows],
                "blocks": {str(k): v for k, v in blocks.items()}}  # fmt: skip
        r = env.http.post(f"/api/v1/projects/{pid}/clks", json=body,
                          headers={"Authorization": token})  # fmt: skip
        assert r.status_code == 201, r.text
    auth = {"Authorization": creds["result_token"]}
    run_id = env.http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": 0.75},
                           headers=auth).json()["run_id"]  # fmt: skip
    # Not --burst: the solve job is queued only once the chunks are done.
    env.worker("--concurrency", "2")
    base = f"/api/v1/projects/{pid}/runs/{run_id}"
    final = wait_for(lambda: (s := env.http.get(f"{base}/status", headers=auth).json())["state"]
                     in ("completed", "error") and s, timeout=60)  # fmt: skip
    assert final["state"] == "completed", final
    got = env.http.get(f"{base}/result", headers=auth).json()["groups"]

    def bits(rows: list[bytes]) -> list[bitarray]:
        out = []
        for row in rows:
            ba = bitarray(endian="big")
            ba.frombytes(row)
            out.append(ba)
        return out

    per_party = (blocks_a, blocks_b)
    direct = greedy_solve(find_candidate_pairs(
        [bits(a), bits(b)], dice_coefficient_accelerated, 0.75,
        blocking_f=lambda d, r, _: per_party[d][r],
    ))  # fmt: skip
    expected = {tuple(sorted((int(d), int(r)) for d, r in g)) for g in direct}
    assert {tuple(sorted((d, r) for d, r in g)) for g in got} == expected
    assert len(expected) > n * 0.9
    jobs = env.store.list_jobs(JobFilter(tag=f"linkage-run:{run_id}"), limit=500).jobs
    assert sum(1 for j in jobs if j.kind == "linkage.compare") >= 1


def test_a_cancelled_sub_job_turns_the_run_into_error_with_a_message(env: Env) -> None:
    creds = project(env)
    pid, auth = creds["project_id"], {"Authorization": creds["result_token"]}
    # 6,000 x 6,000 in about 120 chunks: most still wait when one of them is cancelled.
    for n, token in enumerate(creds["update_tokens"]):
        env.http.post(f"/api/v1/projects/{pid}/clks", json={"clks": clks(6000, seed=n)},
                      headers={"Authorization": token})  # fmt: skip
    run_id = env.http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": 0.9},
                           headers=auth).json()["run_id"]  # fmt: skip
    base = f"/api/v1/projects/{pid}/runs/{run_id}"
    assert env.http.get(f"{base}/status", headers=auth).json()["state"] == "queued"
    # The run job plans the chunks and spawns them as its children when a worker runs it.
    env.worker("--concurrency", "1")
    params = {"tag": f"linkage-run:{run_id}", "kind": "linkage.compare", "state": "queued",
              "limit": 1000}  # fmt: skip
    waiting = wait_for(lambda: env.http.get("/v1/jobs", params=params).json()["jobs"], 60)
    victim = waiting[-1]["id"]
    assert env.http.post(f"/v1/jobs/{victim}/cancel").status_code == 200
    status = wait_for(lambda: (s := env.http.get(f"{base}/status", headers=auth).json())["state"]
                      == "error" and s, timeout=30)  # fmt: skip
    assert victim in status["message"] and "cancelled" in status["message"]
    r = env.http.get(f"{base}/result", headers=auth)
    assert r.status_code == 500 and "cancelled" in r.json()["detail"]

    # The run's other jobs were cancelled with it: the run job, and every chunk not done.
    def jobs() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = env.http.get("/v1/jobs", params={
            "tag": f"linkage-run:{run_id}", "limit": 1000}).json()["jobs"]  # fmt: skip
        return found

    wait_for(lambda: all(j["state"] in ("succeeded", "cancelled") for j in jobs()), 30)
    chunks = [j for j in jobs() if j["kind"] == "linkage.compare"]
    assert len(chunks) > 100  # every chunk was spawned (about 120)
    assert sum(j["state"] == "cancelled" for j in chunks) > len(chunks) // 2
    [run_job] = [j for j in jobs() if j["kind"] == "linkage.run"]
    assert run_job["state"] == "cancelled"


def test_which_token_reads_what_as_the_original(env: Env) -> None:
    """The original's views (7508502): the result token reads everything; a receipt token a
    permutations project's description, its runs' status and its own result; an update token
    only uploads. A missing project is 403, then a missing header 401 where it said so."""
    for result_type in ("groups", "permutations"):
        creds = project(env, result_type)
        pid, result = creds["project_id"], {"Authorization": creds["result_token"]}
        update = {"Authorization": creds["update_tokens"][0]}
        receipt = {"Authorization": env.http.post(
            f"/api/v1/projects/{pid}/clks", json={"clks": clks(3)}, headers=update,
        ).json()["receipt_token"]}  # fmt: skip
        run_id = env.http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": 0.9},
                               headers=result).json()["run_id"]  # fmt: skip
        run = f"/api/v1/projects/{pid}/runs/{run_id}"
        receipts = 200 if result_type == "permutations" else 403
        expected = {
            f"/api/v1/projects/{pid}": {"result": 200, "update": 403, "receipt": receipts},
            f"/api/v1/projects/{pid}/runs": {"result": 200, "update": 403, "receipt": 403},
            run: {"result": 200, "update": 403, "receipt": 403},
            f"{run}/status": {"result": 200, "update": 403, "receipt": receipts},
        }
        for path, codes in expected.items():
            for name, headers in (("result", result), ("update", update), ("receipt", receipt)):
                got = env.http.get(path, headers=headers).status_code
                assert got == codes[name], (result_type, path, name, got)
        for path in (f"/api/v1/projects/{pid}", f"/api/v1/projects/{pid}/runs"):
            assert env.http.get(path).status_code == 401, path
        assert env.http.get(f"{run}/status").status_code == 403
        assert env.http.get(f"/api/v1/projects/{'0' * 48}").status_code == 403
        missing = env.http.post(f"/api/v1/projects/{'0' * 48}/clks", json={"clks": clks(2)})
        assert missing.status_code == 403


def test_names_must_be_text_and_blocks_need_a_blocking_project(env: Env) -> None:
    for field in ("name", "notes"):
        body = {"schema": json.loads(SCHEMA.read_text()), "result_type": "groups",
                field: ["not", "text"]}  # fmt: skip
        r = env.http.post("/api/v1/projects", json=body)
        assert r.status_code == 400 and field in r.json()["detail"], r.text
    r = env.http.post("/api/v1/projects", json={"schema": {}, "result_type": "groups",
                                                "uses_blocking": "false"})  # fmt: skip
    assert r.status_code == 400 and "uses_blocking" in r.json()["detail"]
    creds = project(env, name="plain")
    pid, result = creds["project_id"], {"Authorization": creds["result_token"]}
    assert env.http.get(f"/api/v1/projects/{pid}", headers=result).json()["name"] == "plain"
    r = env.http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": 0.9, "name": [1]},
                      headers=result)  # fmt: skip
    assert r.status_code == 400 and "name" in r.json()["detail"]
    update = {"Authorization": creds["update_tokens"][0]}
    with_blocks = {"encodings": clks(2), "blocks": {"0": ["b1"], "1": ["b1"]}}
    r = env.http.post(f"/api/v1/projects/{pid}/clks", headers=update, json=with_blocks)
    assert r.status_code == 403 and "Blocking has been disabled" in r.json()["detail"]
    r = env.http.post(f"/api/v1/projects/{pid}/clks", json={"clks": clks(2)}, headers=update)
    assert r.status_code == 201, "the refused upload did not use the token up"
    blocking = project(env, uses_blocking=True)
    r = env.http.post(f"/api/v1/projects/{blocking['project_id']}/clks", json={"clks": clks(2)},
                      headers={"Authorization": blocking["update_tokens"][0]})  # fmt: skip
    assert r.status_code == 403 and "Expecting blocking information" in r.json()["detail"]


def test_a_run_past_1000_chunks_is_accepted_and_planned_whole(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,100 x 1,100 records in chunks of 1,000 comparisons are 1,225 chunks: more than the
    1,000 jobs of a submit batch, which once made such runs impossible (refused, then a
    stopgap refused them cleanly). The chunks are the run job's children now: the upload is
    accepted, the run queued, and its status counts every comparison. (A run of 1,089 chunks
    is run to completion in test_run_job.py.)"""
    from tests.linkage.conftest import Env as LinkageEnv
    from tests.servers.conveyor_api import sqlite_api_in_thread

    monkeypatch.setenv("CONVEYOR_LINKAGE_CHUNK_COMPARISONS", "1000")
    with sqlite_api_in_thread(tmp_path) as api:
        env = LinkageEnv(api)
        try:
            creds = project(env)
            pid, result = creds["project_id"], {"Authorization": creds["result_token"]}
            t0, t1 = ({"Authorization": t} for t in creds["update_tokens"])
            run_id = env.http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": 0.9},
                                   headers=result).json()["run_id"]  # fmt: skip
            url = f"/api/v1/projects/{pid}/clks"
            assert env.http.post(url, json={"clks": clks(1100)}, headers=t0).status_code == 201
            second = env.http.post(url, json={"clks": clks(1100, seed=1)}, headers=t1)
            assert second.status_code == 201, second.text
            status = env.http.get(f"/api/v1/projects/{pid}/runs/{run_id}/status", headers=result)
            assert status.json()["state"] == "queued"
            progress = status.json()["current_stage"]["progress"]
            assert progress["absolute"] == 0 and progress["relative"] == 0
            [job] = env.store.list_jobs(JobFilter(tag=f"linkage-run:{run_id}")).jobs
            assert job.kind == "linkage.run" and job.input["chunk_aim"] == 1000
        finally:
            env.close()
