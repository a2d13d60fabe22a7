"""Shared helpers of the packaging tests: where the tools are, rendering,
strict Kubernetes schema validation, and the assertions that the chart and the
kustomize base must both pass (security context, exact RBAC rules).

The tools come from scripts/install-tools.sh (.tools/); without them the tests
FAIL with the command to run, they never skip.
"""

import json
import os
import re
import subprocess
import sys
import unittest

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOLS = os.path.join(ROOT, ".tools")
HELM = os.path.join(TOOLS, "bin", "helm")
KUBECTL = os.path.join(TOOLS, "bin", "kubectl")
HADOLINT = os.path.join(TOOLS, "bin", "hadolint")
CHART = os.path.join(ROOT, "charts", "copyimage-canceller")
DEPLOY = os.path.join(ROOT, "deploy")
FIX = "run scripts/install-tools.sh (installs pinned, hash-checked helm, kubectl, hadolint and kubernetes-validate into .tools/)"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate knows: every manifest must be valid in both.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

# The operator's rules, exactly (events.k8s.io: the kube-rs Recorder creates an
# Event and patches it when it repeats).
RULES_RESOURCES = {"apiGroups": ["ecs.alibabacloud.com"], "resources": ["copyimagecancellations"], "verbs": ["get", "list", "watch"]}
RULES_STATUS = {"apiGroups": ["ecs.alibabacloud.com"], "resources": ["copyimagecancellations/status"], "verbs": ["patch"]}
RULES_EVENTS = {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
RULES_SECRETS = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}
RULES_LEASES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["copyimage-canceller"], "verbs": ["get", "update", "patch"]},
]
# Tenant roles (RamRoleSelectors): cluster-scoped, so a ClusterRole of its own.
RULES_TENANT_ROLES = [
    {"apiGroups": ["ecs.alibabacloud.com"], "resources": ["ramroleselectors"], "verbs": ["list", "watch"]},
    {"apiGroups": ["ecs.alibabacloud.com"], "resources": ["ramroleselectors/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]
RULES_VIEW = [{"apiGroups": ["ecs.alibabacloud.com"], "resources": ["copyimagecancellations"], "verbs": ["get", "list", "watch"]}]
RULES_EDIT = [{"apiGroups": ["ecs.alibabacloud.com"], "resources": ["copyimagecancellations"], "verbs": ["create", "delete", "deletecollection", "patch", "update"]}]


def assert_selectors_only_for_cluster_admins(test, docs):
    """No aggregated (view/edit/admin) ClusterRole grants anything on ramroleselectors:
    namespace editors and admins cannot write them."""
    for doc in docs:
        if doc["kind"] != "ClusterRole":
            continue
        labels = doc["metadata"].get("labels", {})
        if not any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels):
            continue
        for rule in doc.get("rules", []):
            resources = rule.get("resources", [])
            test.assertFalse(
                any(r in ("*", "ramroleselectors") or r.startswith("ramroleselectors/") for r in resources),
                "%s aggregates into view/edit/admin and grants %s" % (doc["metadata"]["name"], rule),
            )


def controller_rules(per_resource_secrets):
    rules = [RULES_RESOURCES, RULES_STATUS, RULES_EVENTS]
    if per_resource_secrets:
        rules.append(RULES_SECRETS)
    return rules


def require_tools():
    """Fails (never skips) when a tool is missing."""
    for path in (HELM, KUBECTL, HADOLINT):
        if not os.access(path, os.X_OK):
            raise AssertionError("%s is missing: %s" % (path, FIX))
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        raise AssertionError("kubernetes-validate is not importable from %s: %s" % (sys.executable, FIX))


def run(argv, expect_ok=True):
    """Runs a command; returns (exit code, stdout, stderr)."""
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    if expect_ok and proc.returncode != 0:
        raise AssertionError("%s failed (exit %d):\n%s\n%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc.returncode, proc.stdout, proc.stderr


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def crate_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        match = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', f.read(), re.M | re.S)
    assert match, "no [package] version in Cargo.toml"
    return match.group(1)


def validate_strict(test, docs, known_custom=("ServiceMonitor",)):
    """Validates each document against the Kubernetes JSON schemas (strict:
    unknown fields are errors). Kinds in known_custom have no schema there and
    are checked by the caller."""
    import kubernetes_validate

    for doc in docs:
        if doc["kind"] in known_custom:
            continue
        for version in KUBERNETES_VERSIONS:
            problem = None
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                problem = "%s %s is invalid for Kubernetes %s at %s: %s" % (
                    doc["kind"], doc["metadata"].get("name"), version,
                    "/".join(str(p) for p in err.path), str(err).splitlines()[0])
            except kubernetes_validate.SchemaNotFoundError:
                problem = "no Kubernetes %s schema for %s %s" % (version, doc["apiVersion"], doc["kind"])
            if problem:
                test.fail(problem)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(test, docs, kind):
    found = by_kind(docs, kind)
    test.assertEqual(len(found), 1, "expected exactly one %s, got %d" % (kind, len(found)))
    return found[0]


def assert_hardened_pod(test, deployment, admin_enabled):
    """Non-root, read-only root filesystem, no capabilities, RuntimeDefault
    seccomp, requests and limits, graceful termination, probes iff admin."""
    pod = deployment["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    test.assertIs(psc.get("runAsNonRoot"), True)
    test.assertNotEqual(psc.get("runAsUser", 0), 0, "runAsUser must not be root")
    test.assertEqual(psc.get("seccompProfile"), {"type": "RuntimeDefault"})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        test.assertFalse(pod.get(key, False), key)
    test.assertGreaterEqual(pod["terminationGracePeriodSeconds"], 30)
    # Pod Security Standard "restricted": only these volume types.
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
    for volume in pod.get("volumes", []):
        test.assertTrue(set(volume) - {"name"} <= allowed, "volume %s is not allowed under the restricted profile" % volume["name"])
    (container,) = pod["containers"]
    csc = container["securityContext"]
    test.assertIs(csc.get("allowPrivilegeEscalation"), False)
    test.assertIs(csc.get("readOnlyRootFilesystem"), True)
    test.assertIs(csc.get("privileged", False), False)
    test.assertEqual(csc.get("capabilities"), {"drop": ["ALL"]})
    test.assertEqual(csc.get("seccompProfile"), {"type": "RuntimeDefault"})
    for port in container.get("ports", []):
        test.assertNotIn("hostPort", port)
    for bound in ("requests", "limits"):
        test.assertEqual(set(container["resources"][bound]), {"cpu", "memory"}, bound)
    if admin_enabled:
        test.assertEqual(container["startupProbe"]["httpGet"], {"path": "/livez", "port": "admin"})
        test.assertEqual(container["livenessProbe"]["httpGet"], {"path": "/livez", "port": "admin"})
        test.assertEqual(container["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"})
        test.assertEqual([p["name"] for p in container["ports"]], ["admin"])
    else:
        for key in ("livenessProbe", "readinessProbe", "startupProbe", "ports"):
            test.assertNotIn(key, container)
    # Keys only ever come from Secrets (RRSA's role ARNs are not secret).
    for env in container.get("env", []):
        if env["name"] in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN"):
            test.assertNotIn("value", env, "%s must come from a Secret" % env["name"])
            test.assertIn("secretKeyRef", env["valueFrom"], env["name"])
    return container


def rbac_objects(docs):
    """{(kind, namespace, name): rules or (roleRef, subjects)} of the RBAC documents."""
    out = {}
    for doc in docs:
        kind = doc["kind"]
        key = (kind, doc["metadata"].get("namespace"), doc["metadata"]["name"])
        if kind in ("ClusterRole", "Role"):
            out[key] = doc["rules"]
        elif kind in ("ClusterRoleBinding", "RoleBinding"):
            out[key] = (doc["roleRef"], doc["subjects"])
    return out


def run_flags(binary):
    """The long flags `copyimage-canceller run --help` lists."""
    code, out, err = run([binary, "run", "--help"], expect_ok=False)
    if code != 0:
        raise AssertionError("%s run --help failed (exit %d): %s" % (binary, code, err.strip()))
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", out))


def passed_flags(container):
    args = container["args"]
    assert args[0] == "run", "the container must run `copyimage-canceller run`, got %r" % args
    return [a.split("=", 1)[0] for a in args[1:]]


def main():
    require_tools()
    unittest.main(verbosity=2)


def dump(obj):
    return json.dumps(obj, indent=2, sort_keys=True)
