"""Copy-as-curl and copy-as-Python snippets for a job: how to do from code what the page shows.
The key is left as `$CONVEYOR_TOKEN`: snippets never contain a secret."""

from __future__ import annotations

import json
import pprint
import shlex

from conveyor.models import Job


def curl(job: Job, base: str) -> str:
    body = json.dumps({"kind": job.kind, "input": job.input, "queue": job.queue})
    auth = '-H "Authorization: Bearer $CONVEYOR_TOKEN"'
    return (
        f"# this job\ncurl -sS {auth} {base}v1/jobs/{job.id}\n"
        f"# its events as they happen\ncurl -sSN {auth} {base}v1/jobs/{job.id}/events\n"
        f"# submit the same input again\ncurl -sS -X POST {auth} \\\n"
        f"  -H 'Content-Type: application/json' \\\n  -d {shlex.quote(body)} \\\n"
        f"  {base}v1/jobs"
    )


def python(job: Job, base: str) -> str:
    payload = pprint.pformat(
        {"kind": job.kind, "input": job.input, "queue": job.queue}, width=88, sort_dicts=False
    ).replace("\n", "\n" + " " * len("payload = "))
    return (
        "import os\n\nimport httpx\n\n"
        f"client = httpx.Client(\n    base_url={base.rstrip('/')!r},\n"
        '    headers={"Authorization": f"Bearer {os.environ[\'CONVEYOR_TOKEN\']}"},\n)\n'
        f"job = client.get({f'/v1/jobs/{job.id}'!r}).json()\n"
        'print(job["state"], job["progress"], job["result"])\n\n'
        "# submit the same input again\n"
        f"payload = {payload}\n"
        'new = client.post("/v1/jobs", json=payload).json()\n'
        'print(new["id"])'
    )
