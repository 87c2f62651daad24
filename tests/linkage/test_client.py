"""The real anonlink-client (CLI and RestClient) against conveyor's entity-service API."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest
from anonlink.candidate_generation import find_candidate_pairs
from anonlink.similarities import dice_coefficient_accelerated
from anonlink.solving import greedy_solve
from bitarray import bitarray

from conveyor.models import JobFilter, JobState
from tests.integration.harness import stop, wait_for
from tests.linkage.conftest import SCHEMA, Env, Febrl, client_python, client_run

pytestmark = pytest.mark.timeout(240)
THRESHOLD = 0.7


def load_clks(path: Path) -> list[bitarray]:
    out = []
    for text in json.loads(path.read_text())["clks"]:
        bits = bitarray(endian="big")
        bits.frombytes(base64.b64decode(text))
        out.append(bits)
    return out


def direct_groups(paths: list[Path], threshold: float) -> set[tuple[tuple[int, int], ...]]:
    """What anonlink computes on the same encodings, in one process."""
    candidates = find_candidate_pairs(
        [load_clks(p) for p in paths], dice_coefficient_accelerated, threshold
    )
    return {tuple(sorted((int(d), int(r)) for d, r in g)) for g in greedy_solve(candidates)}


def as_groups(result: dict[str, Any]) -> set[tuple[tuple[int, int], ...]]:
    return {tuple(sorted((d, r) for d, r in g)) for g in result["groups"]}


def cli_flow(env: Env, tmp: Path, clks: list[Path], result_type: str) -> tuple[Any, dict[str, Any]]:
    """create-project → upload per party → create run → results --watch, all with the CLI."""
    creds = json.loads(client_run(
        "create-project", "--schema", SCHEMA, "--type", result_type, "--name", "test",
        "--parties", str(len(clks)), "--server", env.url,
    ))  # fmt: skip
    receipts = [
        json.loads(
            client_run(
                "upload",
                clk,
                "--project",
                creds["project_id"],
                "--apikey",
                token,
                "--server",
                env.url,
            ).splitlines()[-1]
        )
        for clk, token in zip(clks, creds["update_tokens"], strict=True)
    ]
    assert all(len(r["receipt_token"]) == 48 for r in receipts)
    run = json.loads(client_run(
        "create", "--project", creds["project_id"], "--apikey", creds["result_token"],
        "--threshold", str(THRESHOLD), "--name", "run", "--server", env.url,
    ))  # fmt: skip
    out = tmp / f"result-{result_type}.json"
    client_run(
        "results", "--project", creds["project_id"], "--apikey", creds["result_token"],
        "--run", run["run_id"], "--watch", "--output", out, "--server", env.url,
    )  # fmt: skip
    return json.loads(out.read_text()), {**creds, "run_id": run["run_id"], "receipts": receipts}


def test_cli_two_parties_groups_accuracy_on_febrl(env: Env, febrl: Febrl, tmp_path: Path) -> None:
    env.worker("--concurrency", "2")
    clks = [febrl.clks("a"), febrl.clks("b")]
    result, ids = cli_flow(env, tmp_path, clks, "groups")
    groups = as_groups(result)
    assert groups == direct_groups(clks, THRESHOLD)  # the service adds no loss
    pairs = {(g[0][1], g[1][1]) for g in groups if len(g) == 2}
    true_positives = len(pairs & febrl.truth)
    precision, recall = true_positives / len(pairs), true_positives / len(febrl.truth)
    print(f"\nFEBRL4 {len(febrl.truth)} entities, threshold {THRESHOLD}:"
          f" precision {precision:.4f} recall {recall:.4f}")  # fmt: skip
    assert precision > 0.99 and recall > 0.98

    # The run's work was conveyor jobs, all tagged: the run job (which merged and solved) and
    # its children, the chunk jobs.
    jobs = env.store.list_jobs(JobFilter(tag=f"linkage-run:{ids['run_id']}"), limit=500).jobs
    kinds = sorted(j.kind for j in jobs)
    assert kinds.count("linkage.compare") >= 4 and kinds.count("linkage.run") == 1
    [run_job] = [j for j in jobs if j.kind == "linkage.run"]
    assert {j.parent_id for j in jobs if j.kind == "linkage.compare"} == {run_job.id}
    assert all(j.state == JobState.SUCCEEDED for j in jobs)
    listed = env.http.get("/v1/jobs", params={"tag": f"linkage-run:{ids['run_id']}"}).json()
    assert len(listed["jobs"]) == len(jobs)

    status = env.http.get(
        f"/api/v1/projects/{ids['project_id']}/runs/{ids['run_id']}/status",
        headers={"Authorization": ids["result_token"]},  # groups: the result token only
    ).json()
    assert status["state"] == "completed" and status["stages"] == 3
    assert status["total_number_comparisons"] == len(febrl.truth) ** 2
    assert status["current_stage"]["description"] == "compute output"


REST_FLOW = r"""
import json, sys
from anonlinkclient.rest_client import RestClient
server, schema, result_type, threshold, *clk_files = sys.argv[1:]
rc = RestClient(server)
out = {"status": rc.server_get_status()}
creds = rc.project_create(json.load(open(schema)), result_type, "rest", parties=len(clk_files))
out["creds"] = creds
out["description"] = rc.project_get_description(creds["project_id"], creds["result_token"])
out["receipts"] = [
    rc.project_upload_clks(creds["project_id"], token, open(path, "rb"))
    for path, token in zip(clk_files, creds["update_tokens"])
]
run = rc.run_create(creds["project_id"], creds["result_token"], float(threshold), "r")
out["run"] = run
out["final"] = rc.wait_for_run(creds["project_id"], run["run_id"], creds["result_token"],
                               timeout=120, update_period=0.2)
token = creds["result_token"]
out["result"] = json.loads(rc.run_get_result_text(creds["project_id"], run["run_id"], token))
if result_type == "permutations":
    out["permutations"] = [
        json.loads(rc.run_get_result_text(creds["project_id"], run["run_id"], r["receipt_token"]))
        for r in out["receipts"]
    ]
rc.run_delete(creds["project_id"], run["run_id"], token)
rc.project_delete(creds["project_id"], token)
print(json.dumps(out))
"""


def rest_flow(env: Env, result_type: str, clks: list[Path]) -> dict[str, Any]:
    args = [env.url, str(SCHEMA), result_type, str(THRESHOLD), *map(str, clks)]
    out: dict[str, Any] = client_python(REST_FLOW, *args)
    assert out["status"]["status"] == "ok"
    assert out["description"]["result_type"] == result_type
    assert out["final"]["state"] == "completed"
    return out


def split_party(febrl: Febrl, tmp: Path) -> list[Path]:
    """Three parties: A, and B split in two halves (by shuffled rows), for 3-party groups."""
    b = json.loads(febrl.clks("b").read_text())["clks"]
    rows = list(range(len(b)))
    random.Random(3).shuffle(rows)
    halves = [sorted(rows[: len(rows) // 2]), sorted(rows[len(rows) // 2 :])]
    paths = [febrl.clks("a")]
    for n, half in enumerate(halves):
        path = tmp / f"b{n}.json"
        path.write_text(json.dumps({"clks": [b[r] for r in half]}))
        paths.append(path)
    return paths


def test_rest_client_all_result_types_and_three_parties(
    env: Env, febrl: Febrl, tmp_path: Path
) -> None:
    env.worker("--concurrency", "2")
    clks = [febrl.clks("a"), febrl.clks("b")]
    expected = direct_groups(clks, THRESHOLD)

    groups = rest_flow(env, "groups", clks)
    assert as_groups(groups["result"]) == expected

    scores = rest_flow(env, "similarity_scores", clks)["result"]["similarity_scores"]
    direct = find_candidate_pairs([load_clks(p) for p in clks], dice_coefficient_accelerated,
                                  THRESHOLD)  # fmt: skip
    sims, (d0, d1), (r0, r1) = direct
    assert [[[a, b], [c, d], s] for s, a, c, b, d in zip(sims, d0, d1, r0, r1, strict=True)] == [
        [[x[0][0], x[0][1]], [x[1][0], x[1][1]], x[2]] for x in scores
    ]

    perm = rest_flow(env, "permutations", clks)
    mask, (p0, p1) = perm["result"]["mask"], perm["permutations"]
    assert p0["rows"] == p1["rows"] == len(mask)
    row_of_a, row_of_b = p0["permutation"], p1["permutation"]
    assert sorted(row_of_a) == list(range(len(row_of_a)))  # a real permutation
    matched = {(a, b) for (_, a), (_, b) in expected}
    same_row = {(a, b) for a in range(len(row_of_a)) for b in [_inverse(row_of_b)
                .get(row_of_a[a])] if b is not None and mask[row_of_a[a]]}  # fmt: skip
    assert same_row == matched

    three = split_party(febrl, tmp_path)
    got = as_groups(rest_flow(env, "groups", three)["result"])
    assert got == direct_groups(three, THRESHOLD)
    assert any(len(g) == 2 and g[0][0] == 0 for g in got)


def _inverse(perm: list[int]) -> dict[int, int]:
    return {row: rec for rec, row in enumerate(perm)}


def test_worker_killed_during_comparisons_run_completes_same(
    env: Env, febrl: Febrl, tmp_path: Path
) -> None:
    clks = [febrl.clks("a"), febrl.clks("b")]
    http = env.http
    creds = http.post("/api/v1/projects", json={
        "schema": json.loads(SCHEMA.read_text()), "result_type": "groups", "name": "kill"
    }).json()  # fmt: skip
    pid = creds["project_id"]
    for path, token in zip(clks, creds["update_tokens"], strict=True):
        headers = {"Authorization": token, "Content-Type": "application/json"}
        r = http.post(f"/api/v1/projects/{pid}/clks", content=path.read_bytes(), headers=headers)
        assert r.status_code == 201, r.text
    auth = {"Authorization": creds["result_token"]}
    run_id = http.post(f"/api/v1/projects/{pid}/runs", json={"threshold": THRESHOLD},
                       headers=auth).json()["run_id"]  # fmt: skip
    status_url = f"/api/v1/projects/{pid}/runs/{run_id}/status"
    assert http.get(status_url, headers=auth).json()["state"] == "queued"

    short = {"CONVEYOR_LEASE_S": "2", "CONVEYOR_HEARTBEAT_S": "0.5", "CONVEYOR_SWEEP_S": "0.5"}
    doomed = env.worker("--concurrency", "1", **short)
    tag = JobFilter(tag=f"linkage-run:{run_id}", state=[JobState.RUNNING])
    wait_for(lambda: env.store.list_jobs(tag).jobs, timeout=60)
    doomed.kill()  # SIGKILL mid-chunk: its lease must expire and the chunk run again
    doomed.wait(10)
    survivor = env.worker("--concurrency", "2", **short)
    final = wait_for(lambda: (s := http.get(status_url, headers=auth).json())["state"]
                     in ("completed", "error") and s, timeout=150)  # fmt: skip
    assert final["state"] == "completed", final
    result = http.get(f"/api/v1/projects/{pid}/runs/{run_id}/result", headers=auth).json()
    assert as_groups(result) == direct_groups(clks, THRESHOLD)
    stop(survivor)
