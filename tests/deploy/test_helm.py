"""The Helm chart: lint, render (default, production and bundled values), validate every
manifest against the Kubernetes schemas in strict mode, and check what the chart promises.

Rendering and linting use helm-python-sdk (Helm's own Go code, no `helm` binary); schemas come
from kubernetes-validate. KEDA and Prometheus Operator kinds have no schema there: they are
checked field by field here instead, and the KEDA triggers are evaluated against the real API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from conveyor.models import NewJob
from conveyor.settings import Settings
from tests.deploy.tools import loud_importorskip
from tests.servers.http import serve_in_thread

helm = loud_importorskip("helm_python", "helm-python-sdk")
kv = loud_importorskip("kubernetes_validate", "kubernetes-validate")
from kubernetes_validate import utils as kv_utils  # noqa: E402

HELM = Path(__file__).resolve().parents[2] / "deploy" / "helm"
CHART = HELM / "conveyor"
KUBE = kv_utils.latest_version()  # the newest Kubernetes kubernetes-validate knows
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
RELEASE, NAMESPACE = "conveyor", "jobs"

BUNDLED = {
    "postgresql": {"enabled": True, "password": "s3cret-pg-pass"},
    "minio": {"enabled": True, "rootPassword": "s3cret-minio-pass"},
    "secrets": {"store": ""},
    "autoscaling": {"enabled": True, "trigger": "prometheus"},
    "api": {"ingress": {"enabled": True}},
}


def production() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((HELM / "values-production.yaml").read_text())
    return values


EXTERNAL = {
    "postgresql": {"enabled": False},
    "secrets": {"store": "postgresql://conveyor:pw@db.internal:5432/conveyor"},
}
VALUES = {
    "default": lambda: {},
    "production": production,
    "bundled": lambda: BUNDLED,
    "external": lambda: EXTERNAL,
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every manifest the chart renders for `values` (NOTES.txt left out)."""
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    values = VALUES[request.param]()
    return request.param, values, render(values)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our own pods (Deployments and the migration Job; bundled services are third-party)."""
    return [d for d in docs if d["kind"] in ("Deployment", "Job")
            and d["metadata"]["labels"].get("app.kubernetes.io/component")
            in ("api", "worker", "migrate")]  # fmt: skip


def hook(doc: dict[str, Any]) -> tuple[set[str], int] | None:
    notes = doc["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in notes:
        return None
    return set(notes["helm.sh/hook"].split(",")), int(notes.get("helm.sh/hook-weight", "0"))


# -- lint and schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUES))
def test_helm_lint_strict_is_clean(name: str) -> None:
    report = helm.lint(str(CHART), VALUES[name](), strict=True, kube_version=f"v{KUBE}")
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not serious, report


def test_every_manifest_validates_strictly(
    rendered: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    name, _, docs = rendered
    assert docs
    for doc in docs:
        label = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in CRD_KINDS:
            continue  # no schema in kubernetes-validate: checked by the KEDA tests below
        try:
            kv_utils.validate(doc, KUBE, strict=True)
        except kv_utils.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{label} is invalid for Kubernetes {KUBE}: {path}: {exc.message}")
        except kv_utils.SchemaNotFoundError as exc:
            pytest.fail(f"{label}: {exc.message}")


def test_bad_values_fail_at_install_time() -> None:
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema({})
    chart.validate_schema(production())
    bad = [
        {"workers": {"pools": [{"name": "Bad_Name", "queues": ["q"], "concurrency": 1}]}},
        {"workers": {"pools": [{"name": "p", "queues": [], "concurrency": 1}]}},
        {"workers": {"pools": [{"name": "p", "queues": ["q"], "concurrency": 0}]}},
        {"workers": {"graceSeconds": -1}},
        {"autoscaling": {"trigger": "cpu"}},
        {"podSecurityContext": {"runAsNonRoot": False}},
        {"securityContext": {"allowPrivilegeEscalation": True}},
        {"api": {"replicas": "two"}},
        {"api": {"resources": {"requests": {"cpu": "lots"}}}},
        {"secrets": {"store": "mysql://x"}},
        {"postgresql": {"enabled": True, "password": "short"}},
        {"monitoring": {"prometheusRule": {"failureRatio": 2}}},
        {"monitoring": {"prometheusRule": {"noWorkerFor": "soon"}}},
        {"api": {"autoscaling": {"targetCPUUtilizationPercentage": 0}}},
        {
            "postgresql": {"enabled": True, "password": "long-enough"},
            "redis": {"enabled": True},
        },
        {"unknownKey": 1},
    ]
    for values in bad:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(values)
    with pytest.raises(helm.HelmError):
        chart.render({"workers": {"graceSeconds": "soon"}}, name=RELEASE, namespace=NAMESPACE)
    # No database at all: refused with a message that says what to set.
    nowhere = {"postgresql": {"enabled": False}, "secrets": {"store": ""}}
    with pytest.raises(helm.HelmError, match=r"secrets\.store .* postgresql\.enabled"):
        chart.render(nowhere, name=RELEASE, namespace=NAMESPACE, is_install=True)


# -- invariants ---------------------------------------------------------------------------------


def test_pods_are_locked_down(rendered: tuple[str, dict[str, Any], list[dict[str, Any]]]) -> None:
    name, _, docs = rendered
    pods = workloads(docs)
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == {
        "api", "worker", "migrate",
    }  # fmt: skip
    for doc in pods:
        spec = doc["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"], f"{name}: no resource requests"
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, "read-only root needs an emptyDir /tmp"
            sources = [next(iter(s.values()))["name"] for s in container["envFrom"]]
            assert len(sources) == 2, sources


def test_api_probes_and_service(
    rendered: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, values, docs = rendered
    api = named(docs, "Deployment", f"{RELEASE}-api")
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["api", "--host", "0.0.0.0"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = named(docs, "Service", f"{RELEASE}-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = named(docs, "PodDisruptionBudget", f"{RELEASE}-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ingresses = by_kind(docs, "Ingress")
    if values.get("api", {}).get("ingress", {}).get("enabled"):
        notes = ingresses[0]["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # SSE
        assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"  # uploads
        backend = ingresses[0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
    else:
        assert not ingresses


def test_workers_drain_within_the_termination_grace(
    rendered: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, values, docs = rendered
    config = named(docs, "ConfigMap", f"{RELEASE}-config")["data"]
    grace = float(config["CONVEYOR_GRACE_S"])
    chart_values = helm.Chart.load(str(CHART)).merge_values(values)
    pools = chart_values["workers"]["pools"]
    workers = [
        d for d in by_kind(docs, "Deployment") if "conveyor.dev/pool" in d["metadata"]["labels"]
    ]
    assert len(workers) == len(pools)
    for pool, deployment in zip(pools, workers, strict=False):
        spec = deployment["spec"]["template"]["spec"]
        deployment_pool = deployment["metadata"]["labels"]["conveyor.dev/pool"]
        pool = next(p for p in pools if p["name"] == deployment_pool)
        assert spec["terminationGracePeriodSeconds"] >= grace + 5
        args = spec["containers"][0]["args"]
        assert args[0] == "worker"
        assert args[args.index("--queues") + 1] == ",".join(pool["queues"])
        assert args[args.index("--concurrency") + 1] == str(pool["concurrency"])
        probe = spec["containers"][0]["livenessProbe"]["exec"]["command"]
        assert probe == ["python", "/opt/conveyor/healthcheck.py"]
        pdb = named(docs, "PodDisruptionBudget", deployment["metadata"]["name"])
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_migration_job_is_a_hook_that_runs_first(
    rendered: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, values, docs = rendered
    job = named(docs, "Job", f"{RELEASE}-migrate")
    phases, weight = hook(job) or (set(), 0)
    bundled_db = helm.Chart.load(str(CHART)).merge_values(values)["postgresql"]["enabled"]
    api = named(docs, "Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]
    init = {c["name"]: c for c in api.get("initContainers", [])}
    if bundled_db:
        # The database is a release resource: the API pods migrate it at install (a
        # post-install hook would only run after `helm install --wait` gave up on the API).
        assert phases == {"pre-upgrade"}
        assert init["migrate"]["args"] == ["db", "migrate"]
        assert next(iter(init)) == "migrate", "migrate before the admin key is installed"
    else:
        assert phases == {"pre-install", "pre-upgrade"}
        assert "migrate" not in init
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["db", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Everything the Job reads exists before it: a hook with a lower weight, or a Secret
    # the operator created beforehand.
    existing = values.get("secrets", {}).get("existingSecret")
    for source in container["envFrom"]:
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        ref = next(iter(source.values()))["name"]
        if kind == "Secret" and ref == existing:
            continue
        found = named(docs, kind, ref)
        assert hook(found) is not None, f"{kind}/{ref} is not a hook"
        found_phases, found_weight = hook(found) or (set(), 0)
        assert found_phases == phases and found_weight < weight
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_config_reaches_every_pod_without_secrets_in_the_configmap(
    rendered: tuple[str, dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, _, docs = rendered
    configs = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith(
        ("-config", "-config-migrate"))]  # fmt: skip
    assert configs
    for config in configs:
        assert all(k.startswith(("CONVEYOR_", "FORWARDED_")) for k in config["data"])
        assert not any("SECRET" in k or "PASSWORD" in k for k in config["data"])
        store = config["data"].get("CONVEYOR_STORE")
        assert store is None or urlsplit(store).password is None, store


# -- KEDA ----------------------------------------------------------------------------------------


def test_keda_scales_each_autoscaled_pool_to_zero_on_queue_depth() -> None:
    values = production()
    docs = render(values)
    objects = {d["metadata"]["name"]: d for d in by_kind(docs, "ScaledObject")}
    pools = values["workers"]["pools"]
    autoscaled = [p for p in pools if "autoscaling" in p]
    assert len(objects) == len(autoscaled) == 2
    auth = by_kind(docs, "TriggerAuthentication")
    assert len(auth) == 1
    assert auth[0]["apiVersion"] == "keda.sh/v1alpha1"
    assert auth[0]["spec"]["secretTargetRef"] == [{
        "parameter": "token", "name": values["autoscaling"]["metricsApi"]["tokenSecret"],
        "key": "token",
    }]  # fmt: skip
    api_url = f"http://{RELEASE}-api.{NAMESPACE}.svc:8000/v1/queues"
    for pool in pools:
        deployment = named(docs, "Deployment", f"{RELEASE}-worker-{pool['name']}")
        if "autoscaling" not in pool:
            assert deployment["spec"]["replicas"] == pool["replicas"]
            continue
        # KEDA owns the replica count: the Deployment must not fight it on upgrades.
        assert "replicas" not in deployment["spec"]
        so = objects[deployment["metadata"]["name"]]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
        }  # fmt: skip
        assert so["spec"]["minReplicaCount"] == 0
        assert so["spec"]["maxReplicaCount"] == pool["autoscaling"]["maxReplicas"]
        triggers = so["spec"]["triggers"]
        assert len(triggers) == 2 * len(pool["queues"])
        for trigger in triggers:
            assert trigger["type"] == "metrics-api"
            meta = trigger["metadata"]
            assert meta["url"] == api_url
            assert meta["authMode"] == "bearer" and meta["format"] == "json"
            assert trigger["authenticationRef"]["name"] == auth[0]["metadata"]["name"]
            assert meta["activationTargetValue"] == "0"  # any waiting job wakes the pool
            assert all(isinstance(v, str) for v in meta.values())  # KEDA wants strings
        locations = {t["metadata"]["valueLocation"] for t in triggers}
        assert locations == {f'#(name=="{q}").{f}' for q in pool["queues"]
                             for f in ("queued", "running")}  # fmt: skip


def gjson(document: Any, path: str) -> Any:
    """The `#(name=="q").field` GJSON query KEDA's metrics-api trigger runs on the response."""
    match = re.fullmatch(r'#\(name=="([^"]+)"\)\.(\w+)', path)
    assert match, path
    row = next((r for r in document if r["name"] == match[1]), None)
    return None if row is None else row[match[2]]


def test_keda_queries_match_what_the_api_serves(tmp_path: Path) -> None:
    """Both triggers read what the real API serves: /v1/queues rows and the /metrics gauge."""
    import httpx

    from conveyor.api.app import create_app
    from conveyor.service import Service
    from conveyor.storage import open_storage
    from conveyor.store import open_store

    store = open_store("memory://")
    settings = Settings(home=tmp_path, store="memory://", imports="conveyor.kinds.demo")
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    from conveyor.kinds.registry import import_kinds

    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    service.submit_many([NewJob(kind="noop")] * 3)
    with serve_in_thread(create_app(settings, store=store)) as url:
        queues = httpx.get(f"{url}/v1/queues").json()
        metrics = httpx.get(f"{url}/metrics").text
    store.close()
    docs = render(production())
    triggers = [t for so in by_kind(docs, "ScaledObject") for t in so["spec"]["triggers"]]
    default = [t for t in triggers if '"default"' in t["metadata"]["valueLocation"]]
    values = {
        t["metadata"]["valueLocation"].rsplit(".", 1)[1]: gjson(
            queues, t["metadata"]["valueLocation"]
        )
        for t in default
    }
    assert values == {"queued": 3, "running": 0}

    prom = render(VALUES["bundled"]())
    queries = [t["metadata"]["query"] for so in by_kind(prom, "ScaledObject")
               for t in so["spec"]["triggers"]]  # fmt: skip
    assert queries and all("conveyor_queue_jobs{" in q for q in queries)
    assert re.search(r'^conveyor_queue_jobs\{queue="default",state="queued"\} 3\.0$', metrics, re.M)


# -- unattended install: every combination, the first admin key, NetworkPolicies, spread ------


TOGGLES = {
    "bundled database": lambda on: {} if on else EXTERNAL,
    "admin key": lambda on: {"adminKey": {"enabled": on}},
    "api autoscaling": lambda on: {"api": {"autoscaling": {"enabled": on}}},
    "network policies": lambda on: {"networkPolicy": {"enabled": on}},
    "prometheus rule": lambda on: {"monitoring": {"prometheusRule": {"enabled": on}}},
    "grafana dashboard": lambda on: {"monitoring": {"grafanaDashboard": {"enabled": on}}},
    "topology spread": lambda on: {
        "api": {"topologySpread": {"enabled": on}},
        "workers": {"topologySpread": {"enabled": on}},
    },
    "worker readiness": lambda on: {"workers": {"readinessProbe": {"enabled": on}}},
}


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def test_every_combination_of_options_renders_valid_manifests() -> None:
    """2^8 value combinations: each renders, and every manifest validates strictly (each
    distinct manifest once: most are the same in many combinations)."""
    import itertools
    import json

    seen: set[tuple[str, str]] = set()
    checked: set[str] = set()
    for switches in itertools.product((False, True), repeat=len(TOGGLES)):
        chosen = list(zip(TOGGLES, switches, strict=True))
        values = merged(*(TOGGLES[name](on) for name, on in chosen))
        label = ", ".join(f"{name}={'on' if on else 'off'}" for name, on in chosen)
        docs = render(values)
        for doc in docs:
            seen.add((doc["kind"], doc["metadata"]["name"]))
            # Generated secrets differ in every render, never in shape.
            shape = {**doc, "stringData": dict.fromkeys(doc.get("stringData", {}), "")}
            key = json.dumps(shape, sort_keys=True)
            if doc["kind"] in CRD_KINDS or key in checked:
                continue
            checked.add(key)
            try:
                kv_utils.validate(doc, KUBE, strict=True)
            except kv_utils.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{label}: {doc['kind']}/{doc['metadata']['name']}: {where}: "
                            f"{exc.message}")  # fmt: skip
    assert {k for k, _ in seen} >= {"HorizontalPodAutoscaler", "NetworkPolicy", "PrometheusRule"}


def test_the_first_admin_key_is_generated_well_formed_and_installed_before_the_api() -> None:
    from conveyor.api import auth
    from conveyor.store import open_store

    docs = render({})
    secret = named(docs, "Secret", f"{RELEASE}-admin-key")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    raw = secret["stringData"]["CONVEYOR_ADMIN_KEY"]
    store = open_store("memory://")
    try:  # what the init container does with it: a valid key, installed idempotently
        assert auth.install_key(store, "admin", ["admin"], raw) == auth.install_key(
            store, "admin", ["admin"], raw
        )
        assert auth.verify_key(store, raw) is not None
    finally:
        store.close()
    api = named(docs, "Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]
    (init,) = [c for c in api["initContainers"] if c["name"] == "admin-key"]
    assert init["args"] == ["keys", "create", "admin", "--scope", "admin", "--from-env",
                            "CONVEYOR_ADMIN_KEY"]  # fmt: skip
    ref = init["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{RELEASE}-admin-key", "key": "CONVEYOR_ADMIN_KEY"}
    # An operator's own Secret: none is generated, the init container reads theirs.
    own = render({"adminKey": {"existingSecret": "my-admin"}})
    assert not [d for d in own if d["metadata"]["name"] == f"{RELEASE}-admin-key"]
    api = named(own, "Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]
    (init,) = [c for c in api["initContainers"] if c["name"] == "admin-key"]
    assert init["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "my-admin"
    off = named(render({"adminKey": {"enabled": False}}), "Deployment", f"{RELEASE}-api")
    assert [c["name"] for c in off["spec"]["template"]["spec"]["initContainers"]] == ["migrate"]


def test_the_bundled_database_password_is_generated_once_per_install() -> None:
    docs = render({})
    copies = [named(docs, "Secret", f"{RELEASE}-secrets{s}")["stringData"]["PGPASSWORD"]
              for s in ("", "-migrate")]  # fmt: skip
    assert copies[0] == copies[1] and len(copies[0]) == 32
    given = render({"postgresql": {"enabled": True, "password": "chosen-password"}})
    assert named(given, "Secret", f"{RELEASE}-secrets")["stringData"]["PGPASSWORD"] == (
        "chosen-password"
    )


def test_network_policies_admit_only_what_each_pod_serves() -> None:
    docs = render(BUNDLED)
    policies = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    pods = {d["metadata"]["name"]: d["spec"]["template"].get("metadata", {}).get("labels", {})
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}  # fmt: skip

    def selects(spec: dict[str, Any], labels: dict[str, str]) -> bool:
        selector = spec["podSelector"]
        if not selector.get("matchLabels", {}).items() <= labels.items():
            return False
        return all(labels.get(e["key"]) in e["values"]
                   for e in selector.get("matchExpressions", []))  # fmt: skip

    api = policies[f"{RELEASE}-api"]
    assert selects(api, pods[f"{RELEASE}-api"]) and not selects(api, pods[f"{RELEASE}-postgresql"])
    assert api["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    closed = policies[f"{RELEASE}-no-ingress"]
    assert closed["policyTypes"] == ["Ingress"] and "ingress" not in closed
    for name, labels in pods.items():
        if labels.get("app.kubernetes.io/component") in ("worker", "migrate"):
            assert selects(closed, labels), name
    assert not selects(closed, pods[f"{RELEASE}-api"])
    database = policies[f"{RELEASE}-postgresql"]
    assert selects(database, pods[f"{RELEASE}-postgresql"])
    (rule,) = database["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    allowed = rule["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= pods[f"{RELEASE}-api"].items()  # this release's pods...
    assert allowed["app.kubernetes.io/instance"] == RELEASE  # ...and no other release's
    (storage,) = policies[f"{RELEASE}-minio"]["ingress"]
    bucket = pods[f"{RELEASE}-minio-bucket"]  # the Job creating the bucket must reach MinIO
    assert storage["from"][0]["podSelector"]["matchLabels"].items() <= bucket.items()
    peers = [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
    limited = render(merged(BUNDLED, {"networkPolicy": {"api": {"from": peers}}}))
    assert named(limited, "NetworkPolicy", f"{RELEASE}-api")["spec"]["ingress"][0]["from"] == peers


def test_api_autoscaling_owns_the_replica_count_and_pods_spread() -> None:
    docs = render({"api": {"autoscaling": {"enabled": True, "minReplicas": 3}}})
    api = named(docs, "Deployment", f"{RELEASE}-api")
    assert "replicas" not in api["spec"]  # the HPA's, not overwritten on upgrades
    hpa = named(docs, "HorizontalPodAutoscaler", f"{RELEASE}-api")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": f"{RELEASE}-api"}  # fmt: skip
    assert hpa["minReplicas"] == 3 and hpa["metrics"][0]["resource"]["name"] == "cpu"
    for deployment in by_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]
        constraints = spec["spec"]["topologySpreadConstraints"]
        assert constraints and all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in constraints)
        for constraint in constraints:
            selector = constraint["labelSelector"]["matchLabels"]
            assert selector.items() <= spec["metadata"]["labels"].items()
            assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert (
        "topologySpreadConstraints"
        not in named(
            render({"api": {"topologySpread": {"enabled": False}}}), "Deployment", f"{RELEASE}-api"
        )["spec"]["template"]["spec"]
    )


def test_workers_are_ready_once_their_heartbeat_is_in_the_store() -> None:
    for deployment in by_kind(render({}), "Deployment"):
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] != "worker":
            continue
        probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        assert probe["exec"]["command"] == ["python", "/opt/conveyor/healthcheck.py"]


def test_monitoring_ships_the_rules_file_and_the_dashboard() -> None:
    monitoring = HELM.parent / "monitoring"
    docs = render({"monitoring": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
                                  "grafanaDashboard": {"enabled": True}}})  # fmt: skip
    rule = named(docs, "PrometheusRule", RELEASE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    # The plain-Prometheus file is the chart's rules at their defaults, word for word.
    assert rule["spec"] == yaml.safe_load((monitoring / "conveyor-alerts.yaml").read_text())
    board = named(docs, "ConfigMap", f"{RELEASE}-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (CHART / "files" / "grafana-dashboard.json").read_text()
    import json

    assert json.loads(board["data"]["conveyor.json"]) == json.loads(shipped)
    tuned = render(
        {"monitoring": {"prometheusRule": {"enabled": True, "oldestWaitingSeconds": 60}}}
    )
    (first,) = named(tuned, "PrometheusRule", RELEASE)["spec"]["groups"][0]["rules"][:1]
    assert first["expr"].endswith("> 60")
