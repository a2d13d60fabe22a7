"""The Dockerfile, read statically (no container engine or registry is
reachable in CI): hadolint finds nothing at any severity, multi-stage, a
locked release build, a non-root distroless runtime, a builder at least as new
as Cargo.toml's rust-version, and a build context that leaves out target/ and
the tool directories."""

import tempfile

import glob
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import ROOT  # noqa: E402


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def instructions(text):
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def version_tuple(text):
    return tuple(int(p) for p in text.split("."))


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.steps = instructions(read("Dockerfile"))

    def stages(self):
        stages = []
        for word, rest in self.steps:
            if word == "FROM":
                stages.append([("FROM", rest)])
            elif stages:
                stages[-1].append((word, rest))
        return stages

    def test_hadolint_finds_nothing(self):
        code, out, err = common.run([common.HADOLINT, "--failure-threshold", "style", os.path.join(ROOT, "Dockerfile")], expect_ok=False)
        self.assertEqual(code, 0, out + err)
        # And it does complain about a careless Dockerfile, so the pass means something.
        with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile") as bad:
            bad.write("FROM debian\nRUN apt-get update && apt-get install curl\n")
            bad.flush()
            code, out, _ = common.run([common.HADOLINT, "--failure-threshold", "style", bad.name], expect_ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("DL3006", out)

    def test_multi_stage_locked_release_build(self):
        stages = self.stages()
        self.assertGreaterEqual(len(stages), 2)
        runs = " ".join(rest for word, rest in stages[0] if word == "RUN")
        self.assertRegex(runs, r"cargo build --release --locked\b")
        self.assertRegex(stages[0][0][1], r" AS build$")

    def test_builder_is_new_enough(self):
        args = dict(rest.split("=", 1) for word, rest in self.steps if word == "ARG" and "=" in rest)
        self.assertIn("RUST_VERSION", args)
        minimum = re.search(r'^rust-version\s*=\s*"([^"]+)"', read("Cargo.toml"), re.M).group(1)
        self.assertGreaterEqual(version_tuple(args["RUST_VERSION"]), version_tuple(minimum)[:2])

    def test_runtime_is_minimal_and_non_root(self):
        runtime = self.stages()[-1]
        self.assertRegex(runtime[0][1], r"^gcr\.io/distroless/cc-debian\d+:nonroot$")
        users = [rest for word, rest in runtime if word == "USER"]
        self.assertEqual(len(users), 1)
        uid = users[0].split(":")[0]
        self.assertTrue(uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid, got %r" % users[0])
        # The chart and the base run as the same uid.
        self.assertIn("runAsUser: %s" % uid, read("charts/copyimage-canceller/values.yaml"))
        self.assertIn("runAsUser: %s" % uid, read("deploy/deployment.yaml"))
        self.assertIn(("ENTRYPOINT", '["/usr/local/bin/copyimage-canceller"]'), runtime)
        copies = [rest for word, rest in runtime if word == "COPY"]
        self.assertEqual(copies, ["--from=build /out/copyimage-canceller /usr/local/bin/copyimage-canceller"])

    def test_build_context_leaves_out_build_output_and_tools(self):
        ignored = {line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")}
        for path in ("target", ".git", ".tools", ".venv", "fuzz/target", "fuzz/corpus"):
            self.assertIn(path, ignored)
        for needed in ("src", "Cargo.toml", "Cargo.lock"):
            self.assertNotIn(needed, ignored)
        # Cargo reads the whole workspace, even to build one binary.
        members = re.search(r"^members\s*=\s*\[([^\]]*)\]", read("Cargo.toml"), re.M).group(1)
        for member in re.findall(r'"([^"]+)"', members):
            parents = [p for p in ignored if member == p or member.startswith(p + "/")]
            self.assertTrue(not parents or "!" + member in ignored, "%s is left out of the build context" % member)
        # Files the sources embed are read at build time too.
        for source in sorted(glob.glob("src/**/*.rs", root_dir=ROOT, recursive=True)):
            for path in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', read(source)):
                embedded = os.path.normpath(os.path.join(os.path.dirname(source), path))
                parents = [p for p in ignored if embedded.startswith(p + "/")]
                kept = [p for p in ignored if p.startswith("!") and embedded.startswith(p[1:] + "/")]
                self.assertTrue(not parents or kept, "%s embeds %s, left out of the build context" % (source, embedded))


if __name__ == "__main__":
    common.main()
