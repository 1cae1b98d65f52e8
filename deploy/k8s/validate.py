"""Validates rendered Kubernetes manifests (a multi-document YAML stream on stdin, as
`kubectl kustomize` prints it) offline:

- every built-in kind against the Kubernetes JSON schemas that the PyPI package
  `kubernetes-validate` ships (strict: an unknown field is an error), for each version given;
- KEDA's ScaledObject and TriggerAuthentication against the openAPIV3Schema of KEDA's own CRDs,
  committed under schemas/crds/ (strict the same way);
- a kind with no schema is an error, not a warning;
- references inside the set: Secrets, ConfigMaps and the ServiceAccount that pods, KEDA and
  each other name exist (only with --complete: a base leaves the Secret to its overlays);
  selectors of Services and PodDisruptionBudgets match a Deployment's pods; probes name a declared
  port; each pod's grace period covers preStop + (the API's) LEVELUP_DRAIN_SECS +
  LEVELUP_SHUTDOWN_GRACE_SECS; the API's readiness probe notices a drain before the drain ends;
  the KEDA query's LIMIT is at least maxReplicaCount x targetQueryValue.

Prints one line per problem and exits 1 if there is any. Usage:
    kubectl kustomize DIR | python validate.py --name DIR --k8s 1.30 --k8s 1.37 [--complete]
"""

import argparse
import copy
import json
import os
import re
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = os.path.dirname(os.path.abspath(__file__))
CRD_DIR = os.path.join(HERE, "schemas", "crds")
# Kubernetes resource quantities (the JSON schemas accept any string).
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[mkMGTPE])?$")


def crd_schemas():
    """(apiVersion, kind) -> JSON schema, from the committed CRDs."""
    schemas = {}
    for name in sorted(os.listdir(CRD_DIR)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(CRD_DIR, name)) as f:
            crd = yaml.safe_load(f)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict(node):
    """OpenAPI v3 (CRD dialect) -> JSON Schema: objects reject unknown fields unless the CRD keeps
    them (x-kubernetes-preserve-unknown-fields), int-or-string takes either, nullable allows null."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value) for key, value in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key in [k for k in node if k.startswith("x-kubernetes-")]:
        del node[key]
    return node


def where(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def validate_schemas(docs, versions, crds, problems):
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in crds:
            validator = jsonschema.Draft202012Validator(crds[key])
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in error.path)
                problems.append(f"{where(doc)}: {path}: {error.message} (KEDA CRD schema)")
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                problems.append(f"{where(doc)}: {path}: {error.message} (Kubernetes {error.version} schema)")
            except kv.SchemaNotFoundError as error:
                problems.append(f"{where(doc)}: {error.message}")
            except kv.VersionNotSupportedError:
                problems.append(f"kubernetes-validate has no schemas for Kubernetes {version}")


def pod_specs(docs):
    for doc in docs:
        if doc.get("kind") in ("Deployment", "Job"):
            yield doc, doc["spec"]["template"]


def check_references(docs, complete, problems):
    names = {(d.get("kind"), d["metadata"]["name"]) for d in docs}

    def need(kind, name, by):
        if complete and (kind, name) not in names:
            problems.append(f"{by}: names {kind} {name!r}, which the rendered set does not contain")

    deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
    for doc, template in pod_specs(docs):
        spec = template["spec"]
        if "serviceAccountName" in spec:
            need("ServiceAccount", spec["serviceAccountName"], where(doc))
        for container in spec.get("initContainers", []) + spec["containers"]:
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for source in container.get("envFrom", []):
                if "secretRef" in source and not source["secretRef"].get("optional"):
                    need("Secret", source["secretRef"]["name"], where(doc))
                if "configMapRef" in source and not source["configMapRef"].get("optional"):
                    need("ConfigMap", source["configMapRef"]["name"], where(doc))
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    need("Secret", ref["name"], where(doc))
            for bound in ("requests", "limits"):
                for resource, quantity in ((container.get("resources") or {}).get(bound) or {}).items():
                    if not QUANTITY.match(str(quantity)):
                        problems.append(f"{where(doc)}: {bound}.{resource} {quantity!r} is not a quantity")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
                if port is not None and port not in ports:
                    problems.append(f"{where(doc)}: {probe} uses port {port!r}, not declared by the container")
    for doc in docs:
        kind = doc.get("kind")
        if kind == "TriggerAuthentication":
            for ref in doc["spec"].get("secretTargetRef", []):
                need("Secret", ref["name"], where(doc))
        elif kind == "ScaledObject":
            target = doc["spec"]["scaleTargetRef"]
            if target.get("kind", "Deployment") == "Deployment" and target["name"] not in deployments:
                problems.append(f"{where(doc)}: scales Deployment {target['name']!r}, which is not in the set")
            if "replicas" in deployments.get(target["name"], {}).get("spec", {}):
                problems.append(f"{where(doc)}: its Deployment sets replicas, which every apply would reset")
            for trigger in doc["spec"]["triggers"]:
                ref = trigger.get("authenticationRef")
                if ref and ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication":
                    need("TriggerAuthentication", ref["name"], where(doc))
                if trigger["type"] == "postgresql":
                    check_keda_limit(doc, trigger, problems)
        elif kind in ("Service", "PodDisruptionBudget"):
            selector = doc["spec"]["selector"] if kind == "Service" else doc["spec"]["selector"]["matchLabels"]
            if not any(
                all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
                for d in deployments.values()
            ):
                problems.append(f"{where(doc)}: selector {selector} matches no Deployment's pods")


def check_keda_limit(doc, trigger, problems):
    limits = [int(n) for n in re.findall(r"\bLIMIT\s+(\d+)", trigger["metadata"]["query"], re.IGNORECASE)]
    target = float(trigger["metadata"]["targetQueryValue"])
    needed = doc["spec"].get("maxReplicaCount", 100) * target
    if any(limit < needed for limit in limits):
        problems.append(
            f"{where(doc)}: the query stops counting at LIMIT {min(limits)}, below maxReplicaCount x "
            f"targetQueryValue = {needed:g}, so the last replicas could never be reached"
        )


def serves_api(container):
    """Whether the container runs `levelup-api serve` (the only process that drains)."""
    command = (container.get("command") or []) + (container.get("args") or [])
    return command[:1] == ["levelup-api"] and command[1:2] in ([], ["serve"])


def check_drain(docs, problems):
    """The shutdown arithmetic (README, "Zero-downtime deploys"): on SIGTERM the API answers
    /readyz with 503 for LEVELUP_DRAIN_SECS while still serving, then lets requests in flight
    finish for LEVELUP_SHUTDOWN_GRACE_SECS; workers only have the grace period. Kubernetes kills
    a pod terminationGracePeriodSeconds after deletion (preStop included), and a readiness probe
    notices a failing /readyz after up to periodSeconds x failureThreshold + timeoutSeconds."""
    config = {}
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            config.update(doc.get("data") or {})
    for doc, template in pod_specs(docs):
        spec = template["spec"]
        for container in spec["containers"]:
            env = dict(config)
            env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
            grace = int(env.get("LEVELUP_SHUTDOWN_GRACE_SECS", "30"))
            drain = int(env.get("LEVELUP_DRAIN_SECS", "15")) if serves_api(container) else 0
            pre_stop = (((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
            sleep = int(pre_stop[1]) if pre_stop and pre_stop[0] == "sleep" else 0
            period = spec.get("terminationGracePeriodSeconds", 30)
            if doc.get("kind") == "Deployment" and period <= sleep + drain + grace:
                problems.append(
                    f"{where(doc)}: terminationGracePeriodSeconds {period} does not exceed preStop {sleep} s + "
                    f"LEVELUP_DRAIN_SECS {drain} s + LEVELUP_SHUTDOWN_GRACE_SECS {grace} s: "
                    "Kubernetes would kill in-flight work"
                )
            probe = container.get("readinessProbe")
            if serves_api(container) and doc.get("kind") == "Deployment":
                if not probe:
                    problems.append(f"{where(doc)}: the API has no readinessProbe, so a drain goes unnoticed")
                    continue
                noticed = (
                    probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) + probe.get("timeoutSeconds", 1)
                )
                if noticed >= drain:
                    problems.append(
                        f"{where(doc)}: the readinessProbe notices a drain after up to {noticed} s "
                        "(periodSeconds x failureThreshold + timeoutSeconds), not within "
                        f"LEVELUP_DRAIN_SECS {drain} s: requests could reach a replica that stopped accepting"
                    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True, help="what is validated, for the messages")
    parser.add_argument("--k8s", action="append", required=True, help="Kubernetes version (repeatable)")
    parser.add_argument("--complete", action="store_true", help="every referenced object must be in the set")
    args = parser.parse_args()
    try:
        docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    except yaml.YAMLError as error:
        print(f"{args.name}: not YAML: {error}".replace("\n", " "))
        return 1
    problems = []
    if not docs:
        problems.append("renders to nothing")
    validate_schemas(docs, args.k8s, crd_schemas(), problems)
    if not problems:
        check_references(docs, args.complete, problems)
        check_drain(docs, problems)
    for problem in problems:
        print(f"{args.name}: {problem}")
    if not problems:
        kinds = sorted({d["kind"] for d in docs})
        print(
            f"{args.name}: {len(docs)} objects valid against Kubernetes {', '.join(args.k8s)} "
            f"and KEDA's CRDs ({', '.join(kinds)})"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
