"""The GitHub workflows and the release scripts, checked here (actionlint runs
in scripts/ci): every third-party action pinned by a full commit SHA with its
version in a comment, least-privilege permissions (none at the top, declared
per job), ci.yml running every step of scripts/ci that .ci/run runs, the
workflows' Rust version equal to the Dockerfile's, and `scripts/release
bundle` producing the release files pointing at the released image."""

import glob
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import ROOT  # noqa: E402

WORKFLOWS = os.path.join(ROOT, ".github", "workflows")
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+#\s+v\d+\.\d+\.\d+\b")
# Who may write what: a job asking for more fails here until this table says why.
ALLOWED_WRITES = {
    ("release.yml", "image"): {"packages"},
    ("release.yml", "publish"): {"contents", "packages", "id-token", "attestations"},
}


def workflow_files():
    files = sorted(glob.glob(os.path.join(WORKFLOWS, "*.yml")) + glob.glob(os.path.join(WORKFLOWS, "*.yaml")))
    assert files, "no workflow in .github/workflows"
    return files


def load(path):
    with open(path) as f:
        text = f.read()
    # NB: YAML 1.1 reads the key `on` as True.
    doc = yaml.safe_load(text)
    if True in doc:
        doc["on"] = doc.pop(True)
    return text, doc


def ci_steps():
    proc = subprocess.run([os.path.join(ROOT, "scripts", "ci"), "--list"], stdout=subprocess.PIPE,
                          universal_newlines=True, check=True, timeout=30)
    return proc.stdout.split()


class WorkflowsTest(unittest.TestCase):
    def test_the_three_workflows_exist(self):
        names = {os.path.basename(p) for p in workflow_files()}
        self.assertTrue({"ci.yml", "e2e.yml", "release.yml"} <= names, names)

    def test_every_action_is_pinned_by_commit_sha_with_its_version(self):
        for path in workflow_files():
            text, _ = load(path)
            for number, line in enumerate(text.splitlines(), 1):
                match = USES.match(line)
                if not match:
                    continue
                ref, rest = match.groups()
                where = "%s:%d" % (os.path.basename(path), number)
                if ref.startswith("./"):
                    continue
                self.assertRegex(ref, PINNED, "%s: %s is not pinned by a full commit SHA" % (where, ref))
                self.assertRegex(rest, VERSION_COMMENT, "%s: %s has no '# vX.Y.Z' comment" % (where, ref))

    def test_one_version_per_pinned_action(self):
        seen = {}
        for path in workflow_files():
            text, _ = load(path)
            for line in text.splitlines():
                match = USES.match(line)
                if match and "@" in match.group(1):
                    action, sha = match.group(1).split("@", 1)
                    seen.setdefault(action, set()).add(sha)
        for action, shas in seen.items():
            self.assertEqual(len(shas), 1, "%s is pinned to several commits: %s" % (action, sorted(shas)))

    def test_least_privilege_permissions(self):
        for path in workflow_files():
            name = os.path.basename(path)
            _, doc = load(path)
            self.assertEqual(doc.get("permissions"), {}, "%s: the workflow must grant nothing by default (permissions: {})" % name)
            for job_id, job in doc["jobs"].items():
                with self.subTest(workflow=name, job=job_id):
                    self.assertIn("permissions", job, "%s: job %s must declare its permissions" % (name, job_id))
                    permissions = job["permissions"]
                    self.assertIsInstance(permissions, dict)
                    writes = {k for k, v in permissions.items() if v == "write"}
                    self.assertEqual(writes, ALLOWED_WRITES.get((name, job_id), set()),
                                     "%s: job %s writes %s" % (name, job_id, sorted(writes)))
                    self.assertTrue(set(permissions.values()) <= {"read", "write", "none"})

    def test_checkout_keeps_no_credentials(self):
        for path in workflow_files():
            _, doc = load(path)
            for job_id, job in doc["jobs"].items():
                for step in job.get("steps", []):
                    if step.get("uses", "").startswith("actions/checkout@"):
                        self.assertIs(step.get("with", {}).get("persist-credentials"), False,
                                      "%s: %s checks out with persisted credentials" % (os.path.basename(path), job_id))

    def test_ci_yml_runs_every_step_of_ci_run(self):
        with open(os.path.join(ROOT, ".ci", "run")) as f:
            ci_run = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        # .ci/run is scripts/ci with no argument: every step.
        self.assertIn("exec scripts/ci", ci_run)
        self.assertFalse([line for line in ci_run if "cargo " in line or "scripts/test" in line],
                         ".ci/run must not run steps of its own: add them to scripts/ci")
        steps = ci_steps()
        self.assertEqual(steps[:4], ["toolchain", "fmt", "clippy", "versions"])
        for step in ("test", "fuzz-smoke", "actionlint", "image-runtime"):
            self.assertIn(step, steps)
        _, doc = load(os.path.join(WORKFLOWS, "ci.yml"))
        run_by_ci_yml = []
        for job in doc["jobs"].values():
            for step in job.get("steps", []):
                for line in step.get("run", "").splitlines():
                    words = line.split()
                    if words[:1] == ["scripts/ci"]:
                        self.assertTrue(len(words) > 1, "ci.yml runs every step in one job; name them")
                        run_by_ci_yml += words[1:]
        self.assertEqual(sorted(run_by_ci_yml), sorted(steps), "ci.yml must run each step of scripts/ci exactly once")

    def test_rust_version_is_the_dockerfiles(self):
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            dockerfile = re.search(r"^ARG RUST_VERSION=(\S+)$", f.read(), re.M).group(1)
        for path in workflow_files():
            _, doc = load(path)
            rust = doc.get("env", {}).get("RUST_VERSION")
            if rust is not None:
                self.assertEqual(str(rust), dockerfile, os.path.basename(path))
        _, ci = load(os.path.join(WORKFLOWS, "ci.yml"))
        image = ci["jobs"]["image-runtime"]["container"]["image"]
        self.assertRegex(image, r"rust:%s-slim-bookworm$" % re.escape(dockerfile))

    def test_release_runs_on_version_tags_and_checks_the_tag(self):
        text, doc = load(os.path.join(WORKFLOWS, "release.yml"))
        self.assertEqual(doc["on"], {"push": {"tags": ["v*"]}})
        self.assertIn('scripts/check-versions --tag "$GITHUB_REF_NAME"', text)
        platforms = {entry["platform"] for entry in doc["jobs"]["image"]["strategy"]["matrix"]["include"]}
        self.assertEqual(platforms, {"linux/amd64", "linux/arm64"})


class ReleaseBundleTest(unittest.TestCase):
    REPO = "ghcr.io/example/copyimage-canceller"
    DIGEST = "sha256:" + "b" * 64

    @classmethod
    def setUpClass(cls):
        proc = subprocess.run([os.path.join(ROOT, "scripts", "release"), "bundle", cls.REPO, cls.DIGEST], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
        if proc.returncode != 0:
            raise AssertionError("scripts/release bundle failed:\n" + proc.stdout)
        cls.dist = os.path.join(ROOT, "dist", "release")
        cls.version = common.crate_version()

    def path(self, name):
        return os.path.join(self.dist, name)

    def test_the_files(self):
        self.assertEqual(sorted(os.listdir(self.dist)), sorted([
            "SHA256SUMS", "copyimagecancellations.yaml", "ramroleselectors.yaml",
            "copyimage-canceller-%s.yaml" % self.version, "copyimage-canceller-%s.tgz" % self.version]))

    def test_the_crd_is_the_committed_one(self):
        for name in ("copyimagecancellations.yaml", "ramroleselectors.yaml"):
            with open(self.path(name)) as a, open(os.path.join(ROOT, "crds", name)) as b:
                self.assertEqual(a.read(), b.read(), name)

    def test_the_kustomize_bundle_pins_the_image_by_digest(self):
        with open(self.path("copyimage-canceller-%s.yaml" % self.version)) as f:
            docs = common.documents(f.read())
        common.validate_strict(self, [d for d in docs if d["kind"] != "CustomResourceDefinition"])
        deployment = common.one(self, docs, "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        self.assertEqual(container["image"], "%s@%s" % (self.REPO, self.DIGEST))
        self.assertEqual(len(common.by_kind(docs, "CustomResourceDefinition")), 2)

    def test_the_chart_defaults_to_the_released_image(self):
        with tarfile.open(self.path("copyimage-canceller-%s.tgz" % self.version)) as tgz:
            chart = yaml.safe_load(tgz.extractfile("copyimage-canceller/Chart.yaml"))
            values = yaml.safe_load(tgz.extractfile("copyimage-canceller/values.yaml"))
        self.assertEqual(chart["version"], self.version)
        self.assertEqual(chart["appVersion"], self.version)
        self.assertEqual(values["image"]["repository"], self.REPO)

    def test_checksums(self):
        with open(self.path("SHA256SUMS")) as f:
            sums = dict(reversed(line.split()) for line in f if line.strip())
        self.assertEqual(set(sums), set(os.listdir(self.dist)) - {"SHA256SUMS"})
        for name, digest in sums.items():
            with open(self.path(name), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest, name)

    def test_a_tag_digest_is_refused(self):
        proc = subprocess.run([os.path.join(ROOT, "scripts", "release"), "bundle", self.REPO, "0.1.0"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("sha256:", proc.stdout)


class CheckVersionsTest(unittest.TestCase):
    def test_the_versions_agree_and_a_wrong_tag_is_refused(self):
        script = os.path.join(ROOT, "scripts", "check-versions")
        version = common.crate_version()
        ok = subprocess.run([script, "--tag", "v" + version], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=30)
        self.assertEqual(ok.returncode, 0, ok.stdout)
        bad = subprocess.run([script, "--tag", "v" + version + "-wrong"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=30)
        self.assertEqual(bad.returncode, 1, bad.stdout)
        self.assertIn("tag the commit 'v%s'" % version, bad.stdout)


if __name__ == "__main__":
    common.main()
