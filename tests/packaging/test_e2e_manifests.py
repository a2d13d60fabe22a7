"""What the end-to-end job installs (scripts/e2e install), checked without a
cluster: deploy/e2e renders with `kubectl kustomize` and is valid Kubernetes,
the chart renders with deploy/e2e/values.yaml, the operator is pointed at the
simulator's Service with flags `run` accepts, the simulator's command line is
one `ecs-simulator` accepts, the Secret and namespace names agree across the
two, and the samples the installed-operator test applies are in the watched
namespace."""

import os
import subprocess
import sys
import tempfile
import unittest
from urllib.parse import urlsplit

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import HELM, KUBECTL, ROOT, CHART, by_kind, one, run  # noqa: E402

E2E = os.path.join(ROOT, "deploy", "e2e")
NAMESPACE = "copyimage-canceller"  # scripts/e2e: the release namespace
RELEASE = "copyimage-canceller"


def binary():
    path = os.environ.get("COPYIMAGE_CANCELLER_BIN")
    if not path:
        raise AssertionError("COPYIMAGE_CANCELLER_BIN is not set: run this through `cargo test --test packaging`")
    return path


def render_e2e():
    _, out, _ = run([KUBECTL, "kustomize", E2E])
    return common.documents(out)


def render_chart(*extra):
    _, out, _ = run([HELM, "template", RELEASE, CHART, "--namespace", NAMESPACE,
                     "-f", os.path.join(E2E, "values.yaml")] + list(extra))
    return common.documents(out)


def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def sample(name):
    with open(os.path.join(ROOT, "deploy", "samples", name)) as f:
        return yaml.safe_load(f)


class E2eManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.e2e = render_e2e()
        cls.chart = render_chart()
        cls.simulator = [d for d in by_kind(cls.e2e, "Deployment") if d["metadata"]["name"] == "ecs-simulator"][0]
        cls.operator = one(unittest.TestCase(), cls.chart, "Deployment")

    def test_everything_is_valid_kubernetes(self):
        common.validate_strict(self, self.e2e)
        common.validate_strict(self, self.chart)

    def test_the_simulator_runs_from_the_operators_image_with_flags_it_accepts(self):
        c = container(self.simulator)
        self.assertEqual(c["image"], "copyimage-canceller:" + common.crate_version())
        args = c["args"]
        self.assertEqual(args[0], "ecs-simulator")
        # clap checks every argument before acting on --help: exit 0 means it parses.
        proc = subprocess.run([binary()] + args + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("--listen=0.0.0.0:8080", args)
        # And the check is not a formality: a misspelt flag is refused.
        proc = subprocess.run([binary(), "ecs-simulator", "--listn=0.0.0.0:8080", "--help"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0)

    def test_the_simulator_pod_is_restricted(self):
        pod = self.simulator["spec"]["template"]["spec"]
        self.assertIs(pod["securityContext"]["runAsNonRoot"], True)
        csc = container(self.simulator)["securityContext"]
        self.assertIs(csc["readOnlyRootFilesystem"], True)
        self.assertIs(csc["allowPrivilegeEscalation"], False)
        self.assertEqual(csc["capabilities"], {"drop": ["ALL"]})

    def test_the_operator_is_pointed_at_the_simulator_service(self):
        args = container(self.operator)["args"]
        endpoint = [a.split("=", 1)[1] for a in args if a.startswith("--ecs-endpoint=")]
        self.assertEqual(len(endpoint), 1, args)
        url = urlsplit(endpoint[0])
        self.assertEqual(url.scheme, "http")
        self.assertIn("--allow-insecure-endpoint", args)
        host = url.hostname.split(".")
        (service,) = by_kind(self.e2e, "Service")
        self.assertEqual(host[:3], [service["metadata"]["name"], service["metadata"]["namespace"], "svc"])
        self.assertEqual(service["metadata"]["namespace"], NAMESPACE)
        self.assertEqual([p["port"] for p in service["spec"]["ports"]], [url.port])
        self.assertEqual(service["spec"]["selector"], self.simulator["spec"]["selector"]["matchLabels"])
        # The installed-operator test reaches the simulator through a port named http.
        self.assertEqual([p["name"] for p in service["spec"]["ports"]], ["http"])

    def test_the_binary_accepts_the_operators_rendered_command_line(self):
        args = container(self.operator)["args"]
        proc = subprocess.run([binary()] + args + ["--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_one_key_secret_for_the_simulator_and_the_operator(self):
        (secret,) = by_kind(self.e2e, "Secret")
        self.assertEqual(secret["metadata"]["namespace"], NAMESPACE)
        refs = set()
        for env in container(self.operator)["env"] + container(self.simulator)["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add(ref["name"])
                if not ref.get("optional"):
                    self.assertIn(ref["key"], secret["stringData"], env["name"])
        self.assertEqual(refs, {secret["metadata"]["name"]})

    def test_the_samples_namespace_exists_and_is_the_only_one_watched(self):
        namespaces = {d["metadata"]["name"] for d in by_kind(self.e2e, "Namespace")}
        self.assertEqual(namespaces, {NAMESPACE, "images"})
        args = container(self.operator)["args"]
        watched = [a.split("=", 1)[1] for a in args if a.startswith("--watch-namespace=")]
        for name in ("copyimagecancellation.yaml", "copyimagecancellation-operator-credentials.yaml",
                     "alibaba-credentials-secret.yaml"):
            self.assertEqual([sample(name)["metadata"]["namespace"]], watched, name)

    def test_scripts_e2e_overlay_sets_the_image_of_both(self):
        # The overlay scripts/e2e writes: same shape, in a scratch directory.
        with tempfile.TemporaryDirectory() as scratch:
            with open(os.path.join(scratch, "kustomization.yaml"), "w") as f:
                f.write("resources:\n  - %s\nimages:\n  - name: copyimage-canceller\n    newName: localhost/cic\n    newTag: \"e2e\"\n"
                        % os.path.relpath(E2E, scratch))
            _, out, _ = run([KUBECTL, "kustomize", scratch])
        (simulator,) = [d for d in common.documents(out) if d["kind"] == "Deployment"]
        self.assertEqual(container(simulator)["image"], "localhost/cic:e2e")
        chart = render_chart("--set-string", "image.repository=localhost/cic", "--set-string", "image.tag=e2e")
        self.assertEqual(container(one(self, chart, "Deployment"))["image"], "localhost/cic:e2e")


if __name__ == "__main__":
    common.main()
