"""Running beyond one machine: the Kubernetes manifests in deploy/k8s/ against the Kubernetes
1.37 schemas (kubernetes-validate, strict: unknown fields fail), the instance ConfigMap equal to
deploy/dagster.k8s.yaml, that file's sections loaded by the classes they name (K8sRunLauncher
from dagster-k8s, PostgreSQL storage, the queued run coordinator), and the Job that launcher
would create for a run validated as well. No cluster and no image are needed."""
from __future__ import annotations

import copy
import re
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
VERSION = "1.37.0"
PG_ENV = {"DAGSTER_PG_HOST": "db.example", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster",
          "DAGSTER_PG_PASSWORD": "not-a-secret", "DAGSTER_PG_DB": "dagster"}


def _resources() -> list[tuple[str, dict]]:
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        out += [(f.name, d) for d in yaml.safe_load_all(f.read_text()) if d]
    return out


def _instance_yaml() -> dict:
    return yaml.safe_load((REPO / "deploy" / "dagster.k8s.yaml").read_text())


def test_every_manifest_passes_its_strict_schema():
    resources = _resources()
    kinds = {d["kind"] for _, d in resources}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service",
            "PersistentVolumeClaim"} <= kinds
    for name, d in resources:
        kubernetes_validate.validate(d, VERSION, strict=True)  # raises ValidationError naming the field
    deployments = {d["metadata"]["name"] for _, d in resources if d["kind"] == "Deployment"}
    assert deployments == {"sfr-user-code", "sfr-dagster-webserver", "sfr-dagster-daemon"}


def test_the_validator_catches_a_misspelled_and_a_mistyped_field():
    dep = next(d for _, d in _resources() if d["kind"] == "Deployment")
    typo = copy.deepcopy(dep)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(typo, VERSION, strict=True)
    wrong = copy.deepcopy(dep)
    wrong["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, VERSION, strict=True)


def test_references_between_manifests_resolve():
    resources = _resources()
    names = {(d["kind"], d["metadata"]["name"]) for _, d in resources}
    assert all(d["metadata"].get("namespace", "sfr") == "sfr" for _, d in resources)
    for _, d in resources:
        if d["kind"] != "Deployment":
            continue
        spec = d["spec"]["template"]["spec"]
        assert ("ServiceAccount", spec["serviceAccountName"]) in names
        for v in spec["volumes"]:
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names
        (c,) = spec["containers"]
        assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["allowPrivilegeEscalation"] is False
    launcher = _instance_yaml()["run_launcher"]["config"]
    assert ("ServiceAccount", launcher["service_account_name"]) in names
    assert ("ConfigMap", launcher["instance_config_map"]) in names
    assert all(("ConfigMap", n) in names for n in launcher["env_config_maps"])
    # the secret is created by the operator (never committed): no manifest may contain one
    assert not any(d["kind"] == "Secret" for _, d in resources)


def test_instance_configmap_is_the_k8s_instance_yaml():
    cm = next(d for _, d in _resources() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sfr-dagster-instance")
    assert yaml.safe_load(cm["data"]["dagster.yaml"]) == _instance_yaml()


def test_instance_sections_load_in_the_classes_they_name(monkeypatch, tmp_path):
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "dagster.yaml").write_text((REPO / "deploy" / "dagster.k8s.yaml").read_text())
    cfg, _ = dagster_instance_config(str(tmp_path))  # the whole file against the instance schema
    loaded = {}
    for section in ("run_launcher", "run_coordinator", "compute_logs"):
        klass = class_from_code_pointer(cfg[section]["module"], cfg[section]["class"])  # as the instance does
        res = process_config(resolve_to_config_type(klass.config_type()), cfg[section].get("config", {}))
        assert res.success, (section, [e.message for e in res.errors])
        loaded[section] = klass.__name__
    assert loaded["run_launcher"] == "K8sRunLauncher"
    from dagster_postgres import DagsterPostgresStorage

    res = process_config(resolve_to_config_type(DagsterPostgresStorage.config_type()), cfg["storage"]["postgres"])
    assert res.success, [e.message for e in res.errors]
    assert res.value["postgres_db"]["password"] == "not-a-secret"  # resolved from the environment
    # and a wrong key is refused by the launcher's schema
    from dagster_k8s import K8sRunLauncher

    bad = {**cfg["run_launcher"]["config"], "job_namespce": "sfr"}
    res = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), bad)
    assert not res.success and "job_namespce" in " ".join(e.message for e in res.errors)


def test_the_run_launchers_job_for_a_run_passes_the_job_schema(tmp_path):
    """K8sRunLauncher built from the instance yaml (with a local kubeconfig instead of the in-cluster
    one), asked for the Kubernetes Job of a run, as launch_run builds it; that Job validates."""
    from dagster import DagsterRun
    from dagster._config import process_config, resolve_to_config_type
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id
    from kubernetes.client import ApiClient

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
        "users": [{"name": "t", "user": {"token": "x"}}]}))
    config = {**_instance_yaml()["run_launcher"]["config"], "load_incluster_config": False,
              "kubeconfig_file": str(kubeconfig)}
    res = process_config(resolve_to_config_type(K8sRunLauncher.config_type()), config)
    assert res.success, [e.message for e in res.errors]
    launcher = K8sRunLauncher.from_config_value(None, res.value)
    assert (launcher.job_namespace, launcher.instance_config_map) == ("sfr", "sfr-dagster-instance")

    run = DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.UUID(int=7)))
    ctx = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    image = next(d for _, d in _resources() if d["metadata"]["name"] == "sfr-user-code")[
        "spec"]["template"]["spec"]["containers"][0]["image"]
    job = construct_dagster_k8s_job(
        job_config=ctx.get_k8s_job_config(job_image=image, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"], job_name=get_job_name_from_run_id(run.run_id),
        pod_name=get_job_name_from_run_id(run.run_id), component="run_worker",
        user_defined_k8s_config=ctx.run_k8s_config, labels={"dagster/run-id": run.run_id})
    body = ApiClient().sanitize_for_serialization(job)
    kubernetes_validate.validate(body, VERSION, strict=True)
    pod = body["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["serviceAccountName"] == "sfr-dagster-run" and c["image"] == image
    assert {"name": "sfr-home", "mountPath": "/srv/sfr"} in c["volumeMounts"]
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert "sfr-env" in {e.get("configMapRef", {}).get("name") for e in c["envFrom"]}
    assert "sfr-secrets" in {e.get("secretRef", {}).get("name") for e in c["envFrom"]}


def test_dockerfile_copies_what_exists_and_runs_unprivileged():
    text = (REPO / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in src.split():
            assert (REPO / path).exists(), path
    assert re.search(r"^USER 10001$", text, re.M)
    assert "'.[k8s]'" in text
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("dagster-k8s==") for d in extras["k8s"])
    # the manifests run the image as the user the Dockerfile creates
    uids = {d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"]
            for _, d in _resources() if d["kind"] == "Deployment"}
    assert uids == {10001}


@pytest.mark.parametrize("name", ["dagster.local.yaml", "dagster.postgres.yaml", "dagster.k8s.yaml"])
def test_every_instance_file_names_classes_that_import(name, monkeypatch, tmp_path):
    """Dagster imports these classes only when it first needs them (a daemon start, a run launch):
    a stale module path (`dagster.core.*` before 1.13) would pass every other check."""
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "dagster.yaml").write_text((REPO / "deploy" / name).read_text())
    cfg, _ = dagster_instance_config(str(tmp_path))
    sections = [s for s in cfg.values() if isinstance(s, dict) and "module" in s and "class" in s]
    assert sections or name == "dagster.local.yaml"
    for s in sections:
        class_from_code_pointer(s["module"], s["class"])
