"""Projects, uploads and runs of the entity-service API, kept as store records.

A project record holds its tokens and what each party uploaded; a run record holds its state
(`created → queued → running → completed | error`) and the id of its `linkage.run` job.
`advance` moves a run along: once every party has uploaded it submits the run job (idempotent:
it has an idempotency key), which spawns one `linkage.compare` child job per chunk (tagged
`linkage-run:<run_id>`, any number of them) and merges and solves when they have all ended.
A chunk that fails or is cancelled ends the run at once (its other jobs are cancelled). Any API
process may call `advance` at any time; the API calls it from a background loop and whenever a
run is read. Runs submitted before the run job existed (their chunk jobs and a solve job
submitted by the API) are still moved along the old way.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from conveyor import errors
from conveyor.kinds.linkage import encodings, plan
from conveyor.kinds.linkage.kind import (
    COMPARE,
    RUN,
    SOLVE,
    RunInput,
    blocks_key,
    clks_key,
    plan_chunks,
    result_key,
)
from conveyor.kinds.registry import registry
from conveyor.models import Job, JobFilter, JobState, NewJob
from conveyor.service import Service

PROJECTS = "linkage_projects"
RUNS = "linkage_runs"
RESULT_TYPES = ("groups", "permutations", "similarity_scores")
ACTIVE = ("created", "queued", "running")
TOKEN_USED = "This token has already been used to upload clks."  # noqa: S105 (a message)
#: A run's comparison sub-jobs are submitted in one batch, so it can have at most this many.

_lock = threading.RLock()


class Forbidden(Exception):
    """403: missing project/run or wrong token (existence does not leak)."""


class Unauthorized(Exception):
    """401: the project exists but the request carries no token (where the original said so)."""


class Invalid(ValueError):
    """400 with this message."""


class NotReady(Exception):
    """404: the run is not complete."""


class RunFailed(Exception):
    """500: the run errored."""


def now() -> str:
    return datetime.now(UTC).isoformat()


def new_token() -> str:
    return secrets.token_hex(24)  # 48 hex characters, like the original's


def same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def run_key(project_id: str, run_id: str) -> str:
    return f"{project_id}:{run_id}"


def tag(run_id: str) -> str:
    return f"linkage-run:{run_id}"


class Linkage:
    """The entity service's use cases on a conveyor `Service`."""

    def __init__(self, service: Service, chunk_aim: int = plan.DEFAULT_AIM) -> None:
        self.service = service
        self.store = service.store
        self.chunk_aim = chunk_aim

    # -- projects ---------------------------------------------------------------------------

    def create_project(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
        if "schema" not in body or not isinstance(body["schema"], dict):
            raise Invalid("'schema' is required and must be an object")
        result_type = body.get("result_type")
        if result_type not in RESULT_TYPES:
            raise Invalid(f"'result_type' must be one of {', '.join(RESULT_TYPES)}")
        texts = {k: body.get(k, "") for k in ("name", "notes")}
        wrong = [k for k, v in texts.items() if not isinstance(v, str)]
        if wrong:
            raise Invalid(f"{' and '.join(map(repr, wrong))} must be a string")
        if not isinstance(body.get("uses_blocking", False), bool):
            raise Invalid("'uses_blocking' must be true or false")
        parties = body.get("number_parties", 2)
        if not isinstance(parties, int) or isinstance(parties, bool) or not 2 <= parties <= 64:
            raise Invalid("'number_parties' must be an integer from 2 to 64")
        if parties > 2 and result_type != "groups":
            raise Invalid("Multi-party linkage requires result type 'groups'.")
        project_id = secrets.token_hex(24)
        record = {
            "project_id": project_id,
            "time_added": now(),
            "schema": body["schema"],
            "result_type": result_type,
            "number_parties": parties,
            "name": texts["name"],
            "notes": texts["notes"],
            "uses_blocking": body.get("uses_blocking", False),
            "result_token": new_token(),
            "parties": [
                {"update_token": new_token(), "receipt_token": None, "count": None}
                for _ in range(parties)
            ],
            "size": encodings.expected_size(body["schema"]),
        }
        self.store.put_record(PROJECTS, project_id, record)
        return {
            "project_id": project_id,
            "update_tokens": [p["update_token"] for p in record["parties"]],
            "result_token": record["result_token"],
        }

    def rate(self) -> int:
        """Comparisons per second of the most recently completed run (0 before any)."""
        done = [r for _, r in self.store.list_records(RUNS)
                if r["state"] == "completed" and r.get("time_started")]  # fmt: skip
        if not done:
            return 0
        last = max(done, key=lambda r: r["time_completed"])
        took = (datetime.fromisoformat(last["time_completed"])
                - datetime.fromisoformat(last["time_started"])).total_seconds()  # fmt: skip
        return int(last["total_comparisons"] / max(took, 1e-3))

    def list_projects(self) -> list[dict[str, Any]]:
        return [{"project_id": k, "time_added": v["time_added"]}
                for k, v in self.store.list_records(PROJECTS)]  # fmt: skip

    def project(self, project_id: str, token: str | None, *, upload: bool = False,
                receipt: bool = False, token_required: bool = False) -> dict[str, Any]:  # fmt: skip
        """The project if `token` is its result token, or an update token where `upload`
        allows, or a receipt token where `receipt` allows and the project's results are
        permutations (the original's `get_authorization_token_type_or_abort`). A missing
        project is 403; then a missing token is 401 where `token_required`, else 403."""
        record = self.store.get_record(PROJECTS, project_id) if project_id else None
        if record is None:
            raise Forbidden("the project does not exist or the token is not valid for it")
        if not token:
            if token_required:
                raise Unauthorized("Authentication token required")
            raise Forbidden("the project does not exist or the token is not valid for it")
        if same(token, record["result_token"]):
            return record
        receipts = receipt and record["result_type"] == "permutations"
        for party in record["parties"]:
            if (upload and same(token, party["update_token"])) or (
                receipts and same(token, party["receipt_token"])
            ):
                return record
        raise Forbidden("the project does not exist or the token is not valid for it")

    def describe(self, record: dict[str, Any]) -> dict[str, Any]:
        contributed = sum(1 for p in record["parties"] if p["count"] is not None)
        return {
            "project_id": record["project_id"],
            "schema": record["schema"],
            "result_type": record["result_type"],
            "number_parties": record["number_parties"],
            "name": record["name"],
            "notes": record["notes"],
            "parties_contributed": contributed,
            "uses_blocking": record["uses_blocking"],
            "error": False,
        }

    def delete_project(self, record: dict[str, Any]) -> None:
        project_id = record["project_id"]
        for _, run in self.store.list_records(RUNS, f"{project_id}:"):
            self.delete_run(run)
        self.store.delete_record(PROJECTS, project_id)
        self.service.storage.delete_prefix(f"jobs/{project_id}/")

    # -- uploads ----------------------------------------------------------------------------

    def upload(self, project_id: str, token: str | None, packed_from: Any) -> dict[str, Any]:
        """Store one party's encodings; `packed_from(record)` parses the body for the project."""
        with _lock:  # one upload per token, even when two arrive at once
            record = self.store.get_record(PROJECTS, project_id) if project_id else None
            if record is None:
                raise Forbidden("the project does not exist or the token is not valid for it")
            if not token:
                raise Unauthorized("Authentication token required")
            party = next((i for i, p in enumerate(record["parties"])
                          if same(token, p["update_token"])), None)  # fmt: skip
            if party is None:
                raise Forbidden("the project does not exist or the token is not valid for it")
            if record["parties"][party]["count"] is not None:
                raise Forbidden(TOKEN_USED)
            packed: encodings.Packed = packed_from(record)
            storage = self.service.storage
            storage.write(clks_key(project_id, party), [packed.data])
            if packed.blocks is not None:
                storage.write(
                    blocks_key(project_id, party), [encodings.dumps_blocks(packed.blocks)]
                )
            receipt = new_token()
            record["parties"][party].update(receipt_token=receipt, count=packed.count)
            if record["size"] is None:
                record["size"] = packed.size
            self.store.put_record(PROJECTS, project_id, record)
        self.advance_project(project_id)
        return {"message": "Updated", "receipt_token": receipt}

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, record: dict[str, Any], body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object with 'threshold'")
        threshold = body.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise Invalid("'threshold' is required and must be a number")
        if not 0 < threshold <= 1:
            raise Invalid(f"'threshold' must be greater than 0 and at most 1, not {threshold}")
        texts = {k: body.get(k, "") for k in ("name", "notes")}
        wrong = [k for k, v in texts.items() if not isinstance(v, str)]
        if wrong:
            raise Invalid(f"{' and '.join(map(repr, wrong))} must be a string")
        run_id = secrets.token_hex(24)
        run = {
            "run_id": run_id,
            "project_id": record["project_id"],
            "time_added": now(),
            "threshold": float(threshold),
            "name": texts["name"],
            "notes": texts["notes"],
            "state": "created",
            "chunk_ids": [],
            "chunk_comparisons": [],
            "total_comparisons": 0,
            "solve_id": None,
        }
        self.store.put_record(RUNS, run_key(record["project_id"], run_id), run)
        self.advance(run)
        return {k: run[k] for k in ("run_id", "threshold", "name", "notes")}

    def list_runs(self, project_id: str) -> list[dict[str, Any]]:
        return [{"run_id": r["run_id"], "time_added": r["time_added"], "state": r["state"]}
                for _, r in self.store.list_records(RUNS, f"{project_id}:")]  # fmt: skip

    def run(self, project_id: str, run_id: str) -> dict[str, Any]:
        run = self.store.get_record(RUNS, run_key(project_id, run_id)) if run_id else None
        if run is None:
            raise Forbidden("the run does not exist or the token is not valid for it")
        return self.advance(run)

    def describe_run(self, run: dict[str, Any]) -> dict[str, Any]:
        return {k: run[k] for k in ("run_id", "threshold", "name", "notes", "time_added")}

    def delete_run(self, run: dict[str, Any]) -> None:
        """Cancel the run's sub-jobs (running ones stop at their next progress report)."""
        with _lock:  # so that no `advance` in flight writes the run back
            key = run_key(run["project_id"], run["run_id"])
            run = self.store.get_record(RUNS, key) or run
            self.store.delete_record(RUNS, key)
        self._cancel_jobs(run)

    def status(self, run: dict[str, Any]) -> dict[str, Any]:
        record = self.store.get_record(PROJECTS, run["project_id"]) or {"parties": []}
        no_mapping = record.get("result_type") == "similarity_scores"
        stages = 2 if no_mapping else 3
        body: dict[str, Any] = {"state": run["state"], "time_added": run["time_added"],
                                "stages": stages}  # fmt: skip
        if run.get("time_started"):
            body["time_started"] = run["time_started"]
        if run["state"] == "completed":
            body["time_completed"] = run.get("time_completed")
            body["total_number_comparisons"] = run["total_comparisons"]
        if run["state"] == "error":
            body["message"] = run.get("message", "the run failed")
        parties = record["parties"]
        uploaded = sum(1 for p in parties if p["count"] is not None)
        if run["state"] == "created":
            progress = {
                "absolute": uploaded,
                "relative": uploaded / max(1, len(parties)),
                "description": "number of parties already contributed",
            }
            stage = {"number": 1, "description": "waiting for CLKs", "progress": progress}
        elif run["state"] == "completed" or run.get("solve_id") or self._solving(run):
            stage = {"number": stages, "description": "compute output"}
            if no_mapping:
                stage = self._compare_stage(run, 2)
        else:
            stage = self._compare_stage(run, 2)
        body["current_stage"] = stage
        return body

    def _compare_stage(self, run: dict[str, Any], number: int) -> dict[str, Any]:
        total = run["total_comparisons"]
        done = total if run.get("solve_id") or run["state"] == "completed" else self._done(run)
        return {
            "number": number,
            "description": "compute similarity scores",
            "progress": {"absolute": done, "relative": done / total if total else 1.0,
                         "description": "number of already computed similarity scores"},
        }  # fmt: skip

    def _done(self, run: dict[str, Any]) -> int:
        if run.get("run_job"):
            pairs = [(job, int(job.input["comparisons"])) for job in self._chunks(run)]
        else:
            pairs = list(zip(self._jobs(run["chunk_ids"]), run["chunk_comparisons"], strict=False))
        done = 0
        for job, comparisons in pairs:
            if job.state == JobState.SUCCEEDED:
                done += comparisons
            elif job.progress is not None and job.state == JobState.RUNNING:
                done += int(min(comparisons, job.progress.current))
        return done

    def _chunks(self, run: dict[str, Any], states: list[JobState] | None = None) -> list[Job]:
        """The run job's chunk jobs (its children), every page of them."""
        found: list[Job] = []
        cursor = None
        flt = JobFilter(parent_id=run["run_job"], state=states)
        while True:
            page = self.service.list_jobs(flt, cursor, 1000)
            found.extend(page.jobs)
            if not page.next_cursor:
                return found
            cursor = page.next_cursor

    def _solving(self, run: dict[str, Any]) -> bool:
        """The run job has resumed after its chunks: it is merging and solving."""
        if not run.get("run_job"):
            return False
        jobs = self._jobs([run["run_job"]])
        return bool(jobs) and jobs[0].state is JobState.RUNNING and jobs[0].continuation is not None

    def _jobs(self, ids: list[str]) -> list[Job]:
        found: dict[str, Job] = {}
        for start in range(0, len(ids), 500):
            page = self.service.list_jobs(JobFilter(ids=ids[start : start + 500]), limit=500)
            found.update((j.id, j) for j in page.jobs)
        return [found[i] for i in ids if i in found]

    def result(self, record: dict[str, Any], run: dict[str, Any], token: str) -> Any:
        if run["state"] == "error":
            raise RunFailed(run.get("message", "the run failed"))
        if run["state"] != "completed":
            raise NotReady("run is not complete")
        data = b"".join(self.service.storage.read(result_key(run["solve_id"])))
        result = json.loads(data)
        if record["result_type"] != "permutations":
            if not same(token, record["result_token"]):
                raise Forbidden("only the result token can fetch this result")
            return result
        if same(token, record["result_token"]):
            return {"mask": result["mask"]}
        for party, p in enumerate(record["parties"]):
            if same(token, p["receipt_token"]):
                return {"permutation": result["permutations"][party], "rows": result["rows"]}
        raise Forbidden("the token is not valid for this result")

    # -- moving runs along -------------------------------------------------------------------

    def advance_project(self, project_id: str) -> None:
        for _, run in self.store.list_records(RUNS, f"{project_id}:"):
            self.advance(run)

    def advance_all(self) -> int:
        """Advance every queued or running run; return how many are still in progress.

        Runs still `created` are left alone: the upload that completes a project advances them.
        """
        busy = 0
        for _, run in self.store.list_records(RUNS):
            if run["state"] in ("queued", "running"):
                busy += self.advance(run)["state"] in ("queued", "running")
        return busy

    def advance(self, run: dict[str, Any]) -> dict[str, Any]:
        """Move the run as far as its jobs allow; return the (stored) run."""
        if run["state"] not in ACTIVE:
            return run
        with _lock:
            key = run_key(run["project_id"], run["run_id"])
            fresh = self.store.get_record(RUNS, key)
            if fresh is None or fresh["state"] not in ACTIVE:
                return fresh or run  # deleted, or ended by another caller meanwhile
            run = fresh
            before = dict(run)
            self._step(run)
            if run != before:
                self.store.put_record(RUNS, key, run)
        return run

    def _step(self, run: dict[str, Any]) -> None:
        record = self.store.get_record(PROJECTS, run["project_id"])
        if record is None:
            return
        if run["state"] == "created":
            if any(p["count"] is None for p in record["parties"]):
                return
            self._submit_run(record, run)
        if run.get("run_job"):
            self._step_run_job(run)
            return
        if not run["solve_id"]:
            jobs = self._jobs(run["chunk_ids"])
            failed = [j for j in jobs if j.state in (JobState.FAILED, JobState.CANCELLED)]
            if failed or len(jobs) < len(run["chunk_ids"]):
                job = failed[0] if failed else None
                reason = job.error.message if job and job.error else "a sub-job was deleted"
                state = job.state.value if job else "deleted"
                self._error(run, f"comparison sub-job {job.id if job else ''} {state}: {reason}")
                return
            if any(j.state in (JobState.RUNNING, JobState.SUCCEEDED) for j in jobs):
                self._started(run)
            if all(j.state == JobState.SUCCEEDED for j in jobs):
                self._submit_solve(record, run)
            return
        solve = self._jobs([run["solve_id"]])
        if not solve or solve[0].state in (JobState.FAILED, JobState.CANCELLED):
            reason = solve[0].error.message if solve and solve[0].error else "cancelled or deleted"
            self._error(run, f"computing the output failed: {reason}")
        elif solve[0].state == JobState.SUCCEEDED:
            run.update(state="completed", time_completed=now())

    def _step_run_job(self, run: dict[str, Any]) -> None:
        found = self._jobs([run["run_job"]])
        job = found[0] if found else None
        if job is None or job.state in (JobState.FAILED, JobState.CANCELLED):
            reason = job.error.message if job and job.error else "cancelled or deleted"
            self._error(run, reason if "sub-job" in reason else f"the run failed: {reason}")
            return
        if job.state is JobState.SUCCEEDED:
            self._started(run)
            run.update(state="completed", time_completed=now(), solve_id=job.id)
            return
        if job.started_at is not None:
            self._started(run)
        # A chunk that failed for good (or was cancelled) ends the run now, not when the last
        # of possibly thousands of other chunks has ended.
        bad = self.service.list_jobs(
            JobFilter(parent_id=job.id, state=[JobState.FAILED, JobState.CANCELLED]), None, 1
        ).jobs
        if bad:
            reason = bad[0].error.message if bad[0].error else "cancelled"
            self._error(run, f"comparison sub-job {bad[0].id} {bad[0].state.value}: {reason}")

    def _started(self, run: dict[str, Any]) -> None:
        if run["state"] == "queued":
            run.update(state="running", time_started=now())

    def _error(self, run: dict[str, Any], message: str) -> None:
        run.update(state="error", message=message)
        self._cancel_jobs(run)

    def _cancel_jobs(self, run: dict[str, Any]) -> None:
        """Cancel the run's jobs that have not ended: the run job first (so it cannot resume),
        then its chunks; runs of the old kind: their chunk jobs and solve job."""
        ids = [*run["chunk_ids"], *([run["solve_id"]] if run.get("solve_id") else [])]
        if run.get("run_job"):
            ids = [run["run_job"]]
            waiting = [JobState.BLOCKED, JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING]
            ids += [job.id for job in self._chunks(run, waiting)]
        for job_id in ids:
            with contextlib.suppress(errors.ConveyorError):  # finished or deleted already
                self.service.cancel(job_id)

    def _ensure_kinds(self) -> None:
        """Register the kinds from this process if no worker has yet, so submits never wait."""
        missing = [k for k in (COMPARE, SOLVE, RUN) if not self._known(k)]
        if missing:
            self.store.register_kinds([registry.get(k).info() for k in missing])
            self.service.kinds(refresh=True)

    def _known(self, kind: str) -> bool:
        try:
            self.service.kind(kind)
        except errors.KindNotFoundError:
            return False
        return True

    def _submit_run(self, record: dict[str, Any], run: dict[str, Any]) -> None:
        project_id, run_id = record["project_id"], run["run_id"]
        sizes = [p["count"] for p in record["parties"]]
        inp = RunInput(
            project_id=project_id, run_id=run_id, threshold=run["threshold"],
            size=record["size"], sizes=sizes, uses_blocking=record["uses_blocking"],
            result_type=record["result_type"], chunk_aim=self.chunk_aim,
            tags=[tag(run_id), f"linkage-project:{project_id}"],
        )  # fmt: skip
        # Planned here too (the same plan the run job makes), for the status's totals.
        chunks = plan_chunks(self.service.storage, inp)
        self._ensure_kinds()
        job = self.service.submit(NewJob(
            kind=RUN, input=inp.model_dump(), priority=20, tags=inp.tags,
            idempotency_key=f"linkage:{run_id}:run",
        ))  # fmt: skip
        run.update(
            state="queued",
            run_job=job.id,
            chunk_count=len(chunks),
            total_comparisons=sum(c["comparisons"] for c in chunks),
            sizes=sizes,
        )

    def _submit_solve(self, record: dict[str, Any], run: dict[str, Any]) -> None:
        self._started(run)
        job = self.service.submit(NewJob(
            kind=SOLVE,
            input={"project_id": record["project_id"], "run_id": run["run_id"],
                   "result_type": record["result_type"], "sizes": run["sizes"],
                   "chunk_ids": run["chunk_ids"], "total_comparisons": run["total_comparisons"]},
            priority=20,
            tags=[tag(run["run_id"]), f"linkage-project:{record['project_id']}"],
            idempotency_key=f"linkage:{run['run_id']}:solve",
        ))  # fmt: skip
        run["solve_id"] = job.id
