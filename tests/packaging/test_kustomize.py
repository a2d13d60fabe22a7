"""The kustomize base (`kubectl kustomize deploy`, kustomize built into the
real kubectl): it builds, every document is valid Kubernetes, and it gets the
same checks as the chart (hardened pod, exact RBAC, credentials from Secrets
only, the CRD identical to crds/, the image tag the crate version). The
resources in deploy/samples are checked against the CRD's own schema, and
anything else there against the Kubernetes schemas."""

import filecmp
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import DEPLOY, KUBECTL, ROOT, RULES_EDIT, RULES_TENANT_ROLES, RULES_VIEW, assert_selectors_only_for_cluster_admins, by_kind, controller_rules, one, rbac_objects, run  # noqa: E402

NAMESPACE = "copyimage-canceller"
SA = {"kind": "ServiceAccount", "name": "copyimage-canceller", "namespace": NAMESPACE}


def build():
    _, out, _ = run([KUBECTL, "kustomize", DEPLOY])
    return common.documents(out)


def crd_schema(name="copyimagecancellations.yaml"):
    import yaml

    with open(os.path.join(ROOT, "crds", name)) as f:
        crd = yaml.safe_load(f)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


class KustomizeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = build()

    def test_builds_the_expected_objects(self):
        kinds = sorted((d["kind"], d["metadata"]["name"]) for d in self.docs)
        self.assertEqual(kinds, sorted([
            ("Namespace", NAMESPACE),
            ("CustomResourceDefinition", "copyimagecancellations.ecs.alibabacloud.com"),
            ("CustomResourceDefinition", "ramroleselectors.ecs.alibabacloud.com"),
            ("ServiceAccount", "copyimage-canceller"),
            ("ClusterRole", "copyimage-canceller"),
            ("ClusterRoleBinding", "copyimage-canceller"),
            ("ClusterRole", "copyimage-canceller-tenant-roles"),
            ("ClusterRoleBinding", "copyimage-canceller-tenant-roles"),
            ("ClusterRole", "copyimage-canceller-view"),
            ("ClusterRole", "copyimage-canceller-edit"),
            ("Deployment", "copyimage-canceller"),
            ("Service", "copyimage-canceller-metrics"),
        ]))
        for doc in self.docs:
            if doc["kind"] in ("ServiceAccount", "Deployment", "Service"):
                self.assertEqual(doc["metadata"]["namespace"], NAMESPACE, doc["kind"])

    def test_every_document_is_valid_kubernetes(self):
        common.validate_strict(self, self.docs)

    def test_deployment_is_hardened_and_runs_the_crate_version(self):
        deployment = one(self, self.docs, "Deployment")
        container = common.assert_hardened_pod(self, deployment, admin_enabled=True)
        self.assertEqual(container["image"], "copyimage-canceller:" + common.crate_version())
        self.assertEqual(deployment["spec"]["template"]["spec"]["serviceAccountName"], "copyimage-canceller")
        self.assertEqual(deployment["spec"]["strategy"]["type"], "Recreate")
        self.assertEqual(deployment["spec"]["replicas"], 1)

    def test_metrics_service_selects_the_operator(self):
        service = one(self, self.docs, "Service")
        pod_labels = one(self, self.docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        for key, value in service["spec"]["selector"].items():
            self.assertEqual(pod_labels.get(key), value)
        self.assertEqual(service["spec"]["ports"], [{"name": "metrics", "port": 8080, "targetPort": "admin", "protocol": "TCP"}])

    def test_rbac_is_exactly_least_privilege(self):
        self.assertEqual(rbac_objects(self.docs), {
            ("ClusterRole", None, "copyimage-canceller"): controller_rules(True),
            ("ClusterRoleBinding", None, "copyimage-canceller"): (
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "copyimage-canceller"}, [SA]),
            ("ClusterRole", None, "copyimage-canceller-tenant-roles"): RULES_TENANT_ROLES,
            ("ClusterRoleBinding", None, "copyimage-canceller-tenant-roles"): (
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "copyimage-canceller-tenant-roles"}, [SA]),
            ("ClusterRole", None, "copyimage-canceller-view"): RULES_VIEW,
            ("ClusterRole", None, "copyimage-canceller-edit"): RULES_EDIT,
        })
        labels = {d["metadata"]["name"]: d["metadata"]["labels"] for d in by_kind(self.docs, "ClusterRole")}
        self.assertEqual(labels["copyimage-canceller-view"]["rbac.authorization.k8s.io/aggregate-to-view"], "true")
        self.assertEqual(labels["copyimage-canceller-edit"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true")

    def test_the_base_crd_is_the_repository_crd(self):
        self.assertEqual(sorted(os.listdir(os.path.join(DEPLOY, "crds"))), sorted(os.listdir(os.path.join(ROOT, "crds"))))
        for name in ("copyimagecancellations.yaml", "ramroleselectors.yaml"):
            self.assertTrue(
                filecmp.cmp(os.path.join(DEPLOY, "crds", name), os.path.join(ROOT, "crds", name), shallow=False),
                "deploy/crds/%s differs from crds/: cp crds/%s deploy/crds/" % (name, name),
            )

    def test_namespace_editors_cannot_write_ramroleselectors(self):
        common.assert_selectors_only_for_cluster_admins(self, self.docs)

    def test_samples_are_valid_copyimagecancellations(self):
        import jsonschema

        schema = crd_schema()
        samples = os.path.join(DEPLOY, "samples")
        names = sorted(n for n in os.listdir(samples) if n.endswith(".yaml"))
        self.assertTrue(names)
        cancellations = 0
        for name in names:
            with self.subTest(sample=name), open(os.path.join(samples, name)) as f:
                for doc in common.documents(f.read()):
                    if doc["kind"] == "CopyImageCancellation":
                        self.assertEqual(doc["apiVersion"], "ecs.alibabacloud.com/v1alpha1")
                        jsonschema.validate(doc, schema)
                        cancellations += 1
                    elif doc["kind"] == "RamRoleSelector":
                        self.assertEqual(doc["apiVersion"], "ecs.alibabacloud.com/v1alpha1")
                        jsonschema.validate(doc, crd_schema("ramroleselectors.yaml"))
                    else:
                        # Anything else beside them (e.g. the credentials Secret) is plain Kubernetes.
                        common.validate_strict(self, [doc], known_custom=())
        self.assertGreater(cancellations, 0)
        # And the schema does refuse a bad resource, so the check above means something.
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.validate({"spec": {"regionId": "cn-hangzhou", "imageId": "ami-123"}}, schema)


if __name__ == "__main__":
    common.main()
