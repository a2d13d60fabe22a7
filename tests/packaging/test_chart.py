"""The Helm chart through the real helm v4 binary: lint, render with several
value sets, validate every document against the Kubernetes schemas, check the
security context, the exact RBAC, the flags passed to the binary, and that the
values schema refuses typos and wrong types."""

import filecmp
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import (  # noqa: E402
    CHART, HELM, ROOT, RULES_EDIT, RULES_EVENTS, RULES_LEASES, RULES_TENANT_ROLES, RULES_VIEW, by_kind, controller_rules, one,
    rbac_objects, run,
)

RELEASE = "cic"
NAMESPACE = "platform"
FULLNAME = "cic-copyimage-canceller"
SA = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}

# Value sets users reach for; each is rendered, linted and checked.
VALUE_SETS = {
    "default": {},
    "watch-namespaces": {"controller": {"watchNamespaces": ["images", "team-b"], "selector": "team=images"}},
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    },
    "no-admin": {"admin": {"enabled": False}, "networkPolicy": {"enabled": True}},
    "ipv6": {"admin": {"bindAddress": "[::]", "port": 9090}},
    "leader-election": {
        "replicaCount": 2,
        "leaderElection": {"enabled": True},
        "podDisruptionBudget": {"enabled": True},
    },
    "tenant-roles-required": {"credentials": {"requireNamespaceRole": True}, "controller": {"watchNamespaces": ["images"]}},
    "credentials-secret": {
        "credentials": {"perResourceSecrets": False, "namespaceRoles": False, "operatorSecret": {"name": "alibaba-operator-keys"}},
        "serviceAccount": {"annotations": {"pod-identity.alibabacloud.com/role-name": "copyimage-canceller"}},
    },
    "rrsa": {
        "rrsa": {
            "enabled": True,
            "roleArn": "acs:ram::1234567890123456:role/copyimage-canceller",
            "oidcProviderArn": "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0ffee",
            "stsRegion": "cn-hangzhou",
            "vpcEndpoint": True,
        },
        "networkPolicy": {"enabled": True, "allowInstanceMetadata": True},
    },
    "network-policy": {
        "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "controller": {"ecsEndpoint": "https://ecs-vpc.{regionId}.aliyuncs.com", "logFormat": "text", "logLevel": "debug", "signatureVersion": "v3"},
    },
    "everything": {
        "replicaCount": 3,
        "admin": {"enabled": True},
        "leaderElection": {"enabled": True, "namespace": "leases"},
        "controller": {"watchNamespaces": ["images"], "extraArgs": ["--selector=team=images"], "shutdownTimeoutSeconds": 30,
                       "maxConcurrentReconciles": 4, "ecsQps": 3, "ecsBurst": 1000000},
        "terminationGracePeriodSeconds": 35,
        "metrics": {"serviceMonitor": {"enabled": True}},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "networkPolicy": {"enabled": True},
        "credentials": {"operatorSecret": {"name": "keys", "securityTokenKey": "token"}, "ecsRamRole": True},
        "image": {"repository": "registry.example.com/platform/copyimage-canceller", "digest": "sha256:" + "a" * 64},
    },
}

def values_file(values):
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    json.dump(values, f)  # JSON is YAML
    f.close()
    return f.name


def template(values, *extra, expect_ok=True):
    path = values_file(values)
    try:
        return run([HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE, "--include-crds", "-f", path] + list(extra), expect_ok=expect_ok)
    finally:
        os.unlink(path)


def get(values, dotted, default=None):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# What every Deployment of the chart passes first (the defaults these values keep).
ARGS_HEAD = [
    "run",
    "--ecs-endpoint=https://ecs.{regionId}.aliyuncs.com",
    "--signature-version=v1",
    "--per-resource-secrets=true",
    "--retry-base-delay=1s",
    "--retry-max-delay=5m",
]
# ...and what it passes after the flags that the values change.
ARGS_TAIL = [
    "--log-format=json",
    "--log-level=info",
    "--admin-addr=0.0.0.0:8080",
]


class ChartTest(unittest.TestCase):
    def deployment(self, name):
        """The Deployment rendered with values `name`, and its one container."""
        deployment = one(self, self.render(name), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return deployment, container

    def render(self, name):
        _, out, _ = template(VALUE_SETS[name])
        return common.documents(out)

    def test_lint_strict_with_every_value_set(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                path = values_file(values)
                try:
                    code, out, err = run([HELM, "lint", "--strict", CHART, "--namespace", NAMESPACE, "-f", path], expect_ok=False)
                finally:
                    os.unlink(path)
                self.assertEqual(code, 0, out + err)
                self.assertIn("0 chart(s) failed", out)

    def test_every_rendered_document_is_valid_kubernetes(self):
        for name in VALUE_SETS:
            with self.subTest(values=name):
                docs = self.render(name)
                self.assertTrue(docs)
                common.validate_strict(self, docs)

    def test_deployment_is_hardened(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                docs = self.render(name)
                deployment = one(self, docs, "Deployment")
                common.assert_hardened_pod(self, deployment, admin_enabled=get(values, "admin.enabled", True))
                pod = deployment["spec"]["template"]["spec"]
                self.assertEqual(pod["serviceAccountName"], FULLNAME)
                self.assertEqual(deployment["spec"]["replicas"], get(values, "replicaCount", 1))
                strategy = "RollingUpdate" if get(values, "leaderElection.enabled") else "Recreate"
                self.assertEqual(deployment["spec"]["strategy"]["type"], strategy)

    def test_image_defaults_to_the_crate_version(self):
        deployment, container = self.deployment("default")
        self.assertEqual(container["image"], "copyimage-canceller:" + common.crate_version())
        deployment, container = self.deployment("everything")
        self.assertEqual(container["image"], "registry.example.com/platform/copyimage-canceller@sha256:" + "a" * 64)

    def test_chart_app_version_is_the_crate_version(self):
        import yaml

        with open(os.path.join(CHART, "Chart.yaml")) as f:
            chart = yaml.safe_load(f)
        self.assertEqual(chart["apiVersion"], "v2")
        self.assertEqual(chart["appVersion"], common.crate_version(), "set appVersion in Chart.yaml to the version in Cargo.toml")
        self.assertTrue(chart["kubeVersion"].startswith(">="))

    def test_chart_crds_are_the_repository_crds(self):
        mine = os.path.join(CHART, "crds")
        theirs = os.path.join(ROOT, "crds")
        self.assertEqual(sorted(os.listdir(mine)), sorted(os.listdir(theirs)))
        for name in os.listdir(theirs):
            self.assertTrue(
                filecmp.cmp(os.path.join(mine, name), os.path.join(theirs, name), shallow=False),
                "charts/copyimage-canceller/crds/%s differs from crds/%s: cp crds/%s charts/copyimage-canceller/crds/" % (name, name, name),
            )

    def test_rbac_is_exactly_least_privilege(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                rbac = rbac_objects(self.render(name))
                secrets = get(values, "credentials.perResourceSecrets", True)
                rules = controller_rules(secrets)
                expected = {
                    ("ClusterRole", None, FULLNAME + "-view"): RULES_VIEW,
                    ("ClusterRole", None, FULLNAME + "-edit"): RULES_EDIT,
                }
                namespaces = get(values, "controller.watchNamespaces", [])
                if namespaces:
                    for ns in namespaces:
                        expected[("Role", ns, FULLNAME)] = rules
                        expected[("RoleBinding", ns, FULLNAME)] = ({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}, [SA])
                    if NAMESPACE not in namespaces:
                        # Events about the operator's own Pod, in its namespace.
                        ev = FULLNAME + "-events"
                        expected[("Role", NAMESPACE, ev)] = [RULES_EVENTS]
                        expected[("RoleBinding", NAMESPACE, ev)] = ({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ev}, [SA])
                else:
                    expected[("ClusterRole", None, FULLNAME)] = rules
                    expected[("ClusterRoleBinding", None, FULLNAME)] = ({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}, [SA])
                if get(values, "credentials.namespaceRoles", True):
                    # Cluster-scoped kinds: a ClusterRole even with watchNamespaces.
                    tr = FULLNAME + "-tenant-roles"
                    expected[("ClusterRole", None, tr)] = RULES_TENANT_ROLES
                    expected[("ClusterRoleBinding", None, tr)] = ({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": tr}, [SA])
                if get(values, "leaderElection.enabled"):
                    lease_ns = get(values, "leaderElection.namespace") or NAMESPACE
                    le = FULLNAME + "-leader-election"
                    expected[("Role", lease_ns, le)] = RULES_LEASES
                    expected[("RoleBinding", lease_ns, le)] = ({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": le}, [SA])
                self.assertEqual(rbac, expected, common.dump({str(k): v for k, v in rbac.items()}))

    def test_aggregated_roles_carry_the_aggregation_labels(self):
        docs = self.render("default")
        roles = {d["metadata"]["name"]: d["metadata"]["labels"] for d in by_kind(docs, "ClusterRole")}
        self.assertEqual(roles[FULLNAME + "-view"].get("rbac.authorization.k8s.io/aggregate-to-view"), "true")
        self.assertEqual(roles[FULLNAME + "-edit"].get("rbac.authorization.k8s.io/aggregate-to-edit"), "true")
        self.assertNotIn("rbac.authorization.k8s.io/aggregate-to-view", roles[FULLNAME])
        _, out, _ = template({"rbac": {"aggregateToDefaultRoles": False}})
        names = {d["metadata"]["name"] for d in by_kind(common.documents(out), "ClusterRole")}
        self.assertEqual(names, {FULLNAME, FULLNAME + "-tenant-roles"})

    def test_namespace_editors_and_admins_cannot_write_ramroleselectors(self):
        for name in VALUE_SETS:
            with self.subTest(values=name):
                common.assert_selectors_only_for_cluster_admins(self, self.render(name))

    def test_tenant_role_flags_follow_the_values(self):
        _, container = self.deployment("default")
        self.assertNotIn("--namespace-roles=false", container["args"])
        self.assertNotIn("--require-namespace-role", container["args"])
        _, container = self.deployment("tenant-roles-required")
        self.assertIn("--require-namespace-role", container["args"])
        _, container = self.deployment("credentials-secret")
        self.assertIn("--namespace-roles=false", container["args"])
        docs = self.render("credentials-secret")
        self.assertNotIn(FULLNAME + "-tenant-roles", {d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")})
        crds = {d["metadata"]["name"] for d in by_kind(self.render("default"), "CustomResourceDefinition")}
        self.assertEqual(crds, {"copyimagecancellations.ecs.alibabacloud.com", "ramroleselectors.ecs.alibabacloud.com"})
        code, _, err = template({"credentials": {"namespaceRoles": False, "requireNamespaceRole": True}}, expect_ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("credentials.requireNamespaceRole needs credentials.namespaceRoles=true", err)

    def test_arguments_follow_the_values(self):
        deployment, container = self.deployment("default")
        self.assertEqual(container["args"], ARGS_HEAD + [
            "--max-concurrent-reconciles=16",
            "--ecs-pacing=adaptive",
            "--shutdown-timeout=45s",
        ] + ARGS_TAIL)
        self.assertEqual([e["name"] for e in container["env"]], ["POD_NAME", "POD_NAMESPACE", "POD_UID"])
        self.assertEqual(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 60)
        deployment, container = self.deployment("ipv6")
        self.assertIn("--admin-addr=[::]:9090", container["args"])
        self.assertEqual(container["ports"], [{"name": "admin", "containerPort": 9090, "protocol": "TCP"}])
        deployment, container = self.deployment("no-admin")
        self.assertNotIn("--admin-addr=0.0.0.0:8080", container["args"])

        deployment, container = self.deployment("everything")
        self.assertEqual(container["args"], ARGS_HEAD + [
            "--watch-namespace=images",
            "--max-concurrent-reconciles=4",
            "--ecs-pacing=adaptive",
            "--ecs-qps=3",
            "--ecs-burst=1000000",
            "--shutdown-timeout=30s",
        ] + ARGS_TAIL + [
            "--leader-elect",
            "--leader-election-namespace=leases",
            "--ecs-ram-role",
            "--selector=team=images",
        ])
        self.assertEqual(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 35)

        deployment, container = self.deployment("watch-namespaces")
        self.assertIn("--watch-namespace=images", container["args"])
        self.assertIn("--watch-namespace=team-b", container["args"])
        self.assertIn("--selector=team=images", container["args"])

    def test_operator_credentials_come_from_the_named_secret(self):
        deployment, container = self.deployment("credentials-secret")
        # No Secret RBAC, so the operator is told not to watch Secrets.
        self.assertIn("--per-resource-secrets=false", container["args"])
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
        self.assertEqual(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], {"name": "alibaba-operator-keys", "key": "accessKeyId"})
        self.assertEqual(env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"], {"name": "alibaba-operator-keys", "key": "accessKeySecret"})
        self.assertEqual(env["ALIBABA_CLOUD_SECURITY_TOKEN"], {"name": "alibaba-operator-keys", "key": "securityToken", "optional": True})
        sa = one(self, self.render("credentials-secret"), "ServiceAccount")
        self.assertEqual(sa["metadata"]["annotations"], {"pod-identity.alibabacloud.com/role-name": "copyimage-canceller"})

    def test_rrsa_mounts_an_sts_token_and_names_the_role(self):
        docs = self.render("rrsa")
        pod = one(self, docs, "Deployment")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        token_dir = "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens"
        self.assertEqual(env["ALIBABA_CLOUD_ROLE_ARN"], "acs:ram::1234567890123456:role/copyimage-canceller")
        self.assertEqual(env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"], "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0ffee")
        self.assertEqual(env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"], token_dir + "/token")
        self.assertEqual(env["ALIBABA_CLOUD_STS_REGION"], "cn-hangzhou")
        self.assertEqual(env["ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED"], "true")
        self.assertNotIn("ALIBABA_CLOUD_ACCESS_KEY_ID", env)
        self.assertIn({"name": "rrsa-oidc-token", "mountPath": token_dir, "readOnly": True}, container["volumeMounts"])
        volume = [v for v in pod["volumes"] if v["name"] == "rrsa-oidc-token"][0]
        self.assertEqual(volume["projected"]["sources"], [{"serviceAccountToken": {"audience": "sts.aliyuncs.com", "expirationSeconds": 3600, "path": "token"}}])
        policy = one(self, docs, "NetworkPolicy")
        self.assertIn({"to": [{"ipBlock": {"cidr": "100.100.100.200/32"}}], "ports": [{"port": 80, "protocol": "TCP"}]}, policy["spec"]["egress"])
        metadata_rule = {"to": [{"ipBlock": {"cidr": "100.100.100.200/32"}}], "ports": [{"port": 80, "protocol": "TCP"}]}
        self.assertIn(metadata_rule, one(self, self.render("everything"), "NetworkPolicy")["spec"]["egress"])
        self.assertNotIn(metadata_rule, one(self, self.render("network-policy"), "NetworkPolicy")["spec"]["egress"])
        for name in ("default", "credentials-secret"):
            pod = one(self, self.render(name), "Deployment")["spec"]["template"]["spec"]
            self.assertEqual([v["name"] for v in pod["volumes"]], ["tmp"])

    def test_metrics_service_and_service_monitor_select_the_operator(self):
        docs = self.render("service-monitor")
        deployment = one(self, docs, "Deployment")
        service = one(self, docs, "Service")
        monitor = one(self, docs, "ServiceMonitor")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        for key, value in service["spec"]["selector"].items():
            self.assertEqual(pod_labels.get(key), value)
        self.assertEqual(service["spec"]["ports"], [{"name": "metrics", "port": 8080, "targetPort": "admin", "protocol": "TCP"}])
        # The ServiceMonitor has no schema in kubernetes-validate: check it by hand.
        self.assertEqual(monitor["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(set(monitor["spec"]), {"selector", "namespaceSelector", "endpoints"})
        for key, value in monitor["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(service["metadata"]["labels"].get(key), value)
        self.assertEqual(monitor["spec"]["namespaceSelector"], {"matchNames": [NAMESPACE]})
        self.assertEqual(monitor["spec"]["endpoints"], [{"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}])
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prometheus")
        # The metrics Service comes with the admin server, and without it there is nothing to scrape.
        self.assertEqual(len(by_kind(self.render("default"), "Service")), 1)
        self.assertEqual(by_kind(self.render("no-admin"), "Service"), [])
        code, _, err = template({"admin": {"enabled": False}, "metrics": {"service": {"enabled": True}, "serviceMonitor": {"enabled": True}}}, expect_ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("metrics.serviceMonitor.enabled needs admin.enabled=true", err)

    def test_pdb_and_network_policy(self):
        pdb = one(self, self.render("leader-election"), "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        pdb = one(self, self.render("everything"), "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["minAvailable"], 2)
        self.assertNotIn("maxUnavailable", pdb["spec"])
        policy = one(self, self.render("network-policy"), "NetworkPolicy")
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress", "Egress"])
        self.assertEqual(policy["spec"]["ingress"], [{"ports": [{"port": 8080, "protocol": "TCP"}], "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]}])
        egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"] if p["protocol"] == "TCP")
        self.assertEqual(egress_ports, [53, 443, 6443])
        for name in ("default", "watch-namespaces", "credentials-secret"):
            docs = self.render(name)
            self.assertEqual(by_kind(docs, "NetworkPolicy") + by_kind(docs, "PodDisruptionBudget"), [])
        # No admin server: no ingress at all.
        self.assertEqual(one(self, self.render("no-admin"), "NetworkPolicy")["spec"]["ingress"], [])

    def test_shutdown_timeout_fits_in_the_grace_period(self):
        # The largest accepted timeout: 5 seconds left for the Lease and the exit.
        for timeout, grace in ((55, 60), (1, 6), (300, 305)):
            with self.subTest(timeout=timeout, grace=grace):
                _, out, _ = template({"controller": {"shutdownTimeoutSeconds": timeout}, "terminationGracePeriodSeconds": grace})
                pod = one(self, common.documents(out), "Deployment")["spec"]["template"]["spec"]
                self.assertEqual(pod["terminationGracePeriodSeconds"], grace)
                self.assertIn("--shutdown-timeout=%ds" % timeout, pod["containers"][0]["args"])

    def test_values_schema_rejects_typos_and_wrong_types(self):
        cases = [
            (["--set", "controler.logLevel=debug"], "additional properties 'controler' not allowed"),
            (["--set", "controller.loglevel=debug"], "additional properties 'loglevel' not allowed"),
            (["--set", "credentials.operatorSecret.accessKeySecret=plain"], "additional properties 'accessKeySecret' not allowed"),
            (["--set", "replicaCount=two"], "/replicaCount"),
            (["--set", "replicaCount=0"], "/replicaCount"),
            (["--set-string", "admin.enabled=yes"], "/admin/enabled"),
            (["--set", "controller.logFormat=xml"], "/controller/logFormat"),
            (["--set", "controller.signatureVersion=v2"], "/controller/signatureVersion"),
            (["--set", "controller.retryBaseDelay=soon"], "/controller/retryBaseDelay"),
            (["--set", "controller.ecsEndpoint=ecs.aliyuncs.com"], "/controller/ecsEndpoint"),
            (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
            (["--set-json", 'controller.watchNamespaces=["Images_Team"]'], "/controller/watchNamespaces/0"),
            (["--set-json", 'controller.extraArgs=["rm -rf"]'], "/controller/extraArgs/0"),
            (["--set", "networkPolicy.apiServerPorts[0]=70000"], "/networkPolicy/apiServerPorts/0"),
            (["--set", "rrsa.roleArn=arn:aws:iam::1:role/x"], "/rrsa/roleArn"),
            (["--set", "rrsa.tokenExpirationSeconds=60"], "/rrsa/tokenExpirationSeconds"),
            (["--set", "rrsa.enabled=true"], "rrsa.enabled needs rrsa.roleArn"),
            (["--set", "rrsa.enabled=true", "--set", "rrsa.roleArn=acs:ram::1:role/r", "--set", "rrsa.oidcProviderArn=acs:ram::1:oidc-provider/p",
              "--set", "credentials.operatorSecret.name=keys"], "choose one"),
            (["--set", "rrsa.enabled=true", "--set", "rrsa.roleArn=acs:ram::1:role/r", "--set", "rrsa.oidcProviderArn=acs:ram::1:oidc-provider/p",
              "--set", "rrsa.vpcEndpoint=true"], "rrsa.vpcEndpoint needs rrsa.stsRegion"),
            (["--set", "admin.bindAddress=localhost"], "/admin/bindAddress"),
            (["--set", "replicaCount=2"], "replicaCount > 1 needs leaderElection.enabled=true"),
            (["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
             "metrics.serviceMonitor.enabled needs admin.enabled=true and metrics.service.enabled=true"),
            (["--set", "controller.shutdownTimeoutSeconds=0"], "/controller/shutdownTimeoutSeconds"),
            (["--set", "controller.ecsQps=0"], "/controller/ecsQps"),
            (["--set", "controller.ecsQps=2.5"], "/controller/ecsQps"),
            (["--set", "controller.ecsBurst=0"], "/controller/ecsBurst"),
            (["--set-string", "controller.ecsBurst=20"], "/controller/ecsBurst"),
            (["--set", "controller.ecsPacing=fixed"], "/controller/ecsPacing"),
            (["--set", "controller.ecsBurst=5"], "controller.ecsBurst needs controller.ecsQps"),
            (["--set", "controller.maxConcurrentReconciles=0"], "/controller/maxConcurrentReconciles"),
            (["--set", "controller.shutdownTimeoutSeconds=60"],
             "controller.shutdownTimeoutSeconds (60) must be at least 5 below terminationGracePeriodSeconds (60)"),
            (["--set", "controller.shutdownTimeoutSeconds=56"],
             "controller.shutdownTimeoutSeconds (56) must be at least 5 below terminationGracePeriodSeconds (60)"),
            (["--set", "terminationGracePeriodSeconds=30"],
             "controller.shutdownTimeoutSeconds (45) must be at least 5 below terminationGracePeriodSeconds (30)"),
        ]
        for argv, message in cases:
            with self.subTest(argv=argv):
                code, out, err = template({}, *argv, expect_ok=False)
                self.assertNotEqual(code, 0, "helm accepted %s:\n%s" % (argv, out[:400]))
                self.assertIn(message, err)

    def test_refuses_clusters_older_than_kube_version(self):
        code, _, err = template({}, "--kube-version", "1.28.9", expect_ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("kubeVersion", err)
        template({}, "--kube-version", "1.29.0")

    def test_notes_tell_how_to_create_a_first_resource(self):
        code, out, err = run([HELM, "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client"], expect_ok=False)
        self.assertEqual(code, 0, err)
        notes = out.split("NOTES:", 1)[1]
        for needle in ("kind: CopyImageCancellation", "kubectl -n images wait cic/", "--for=condition=Ready", "credentialsSecretRef", "rollout status deployment/" + FULLNAME):
            self.assertIn(needle, notes)


if __name__ == "__main__":
    common.main()
