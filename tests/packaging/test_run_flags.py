"""Every flag the chart (with each value set) and the kustomize base pass to
the container must be one that `copyimage-canceller run --help` of the
freshly built binary lists, so that no install crash-loops on "unexpected
argument". Flags of features still to come are allowed only behind their
opt-in value, never in a default install."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import one  # noqa: E402
from test_chart import VALUE_SETS, get, template  # noqa: E402
from test_kustomize import build  # noqa: E402

# Flags that `run` does not have yet, and the value that switches each on
# (none at present). A flag the binary already accepts needs no entry here.
LATER_FLAGS = {}


def container(docs):
    (c,) = [d for d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]["containers"]
    return c


class RunFlagsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        binary = os.environ.get("COPYIMAGE_CANCELLER_BIN")
        if not binary:
            raise AssertionError("COPYIMAGE_CANCELLER_BIN is not set: run this through `cargo test --test packaging`")
        cls.accepted = common.run_flags(binary)

    def test_help_lists_the_flags_of_the_contract(self):
        for flag in ("--ecs-endpoint", "--retry-base-delay", "--retry-max-delay", "--watch-namespace", "--selector",
                     "--max-concurrent-reconciles", "--log-format", "--log-level", "--allow-insecure-endpoint",
                     "--admin-addr", "--leader-elect", "--ecs-pacing", "--ecs-qps", "--ecs-burst", "--shutdown-timeout",
                     "--signature-version"):
            self.assertIn(flag, self.accepted)

    def test_chart_passes_only_accepted_flags(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                _, out, _ = template(values)
                for flag in common.passed_flags(container(common.documents(out))):
                    if flag in self.accepted:
                        continue
                    self.assertIn(flag, LATER_FLAGS, "the chart passes %s, which `run --help` does not list" % flag)
                    self.assertTrue(get(values, LATER_FLAGS[flag]), "%s is passed although %s is off" % (flag, LATER_FLAGS[flag]))

    def test_the_binary_parses_the_rendered_arguments(self):
        # clap parses (and checks duplicates and values of) every argument
        # before it acts on a trailing --help: exit 0 means the container's
        # command line would be accepted as rendered.
        binary = os.environ["COPYIMAGE_CANCELLER_BIN"]
        rendered = {"kustomize base": container(build())["args"]}
        for name, values in VALUE_SETS.items():
            _, out, _ = template(values)
            rendered["chart " + name] = container(common.documents(out))["args"]
        for name, args in rendered.items():
            with self.subTest(manifest=name):
                args = [a for a in args if a.split("=", 1)[0] not in LATER_FLAGS or a.split("=", 1)[0] in self.accepted]
                code, _, err = common.run([binary] + args + ["--help"], expect_ok=False)
                self.assertEqual(code, 0, "%s: `%s` is refused: %s" % (name, " ".join(args), err.strip()))

    def test_kustomize_base_passes_only_accepted_flags(self):
        for flag in common.passed_flags(container(build())):
            self.assertIn(flag, self.accepted, "deploy/deployment.yaml passes %s, which `run --help` does not list" % flag)


if __name__ == "__main__":
    common.main()
