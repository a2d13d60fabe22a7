"""deploy/argocd/health.lua under Lua 5.1 (PUC-Rio, embedded by lupa), driven
by its own health_test.yaml in Argo CD's format: each testdata object is handed
to the script as the global `obj` (converted as Argo CD converts an
unstructured object: maps to tables, lists to 1-based tables), and the returned
status and message must equal the expected ones exactly. Every testdata object
must also be a valid CopyImageCancellation under the CRD's schema."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import DEPLOY, ROOT  # noqa: E402

ARGOCD = os.path.join(DEPLOY, "argocd")


def load_yaml(path):
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def health_tests():
    return load_yaml(os.path.join(ARGOCD, "health_test.yaml"))["tests"]


def lua_runtime():
    try:
        import lupa.lua51
    except ImportError:
        raise AssertionError("lupa (Lua 5.1) is not importable from %s: %s" % (sys.executable, common.FIX))
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    assert lua.lua_version == (5, 1), lua.lua_version
    # Argo CD's VM offers no file, OS or module access: neither does this one.
    lua.execute("io, os, debug, package, require, dofile, loadfile, load, loadstring = nil")
    return lua


def to_lua(lua, value):
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


def evaluate(obj):
    """(status, message) that health.lua returns for obj."""
    lua = lua_runtime()
    with open(os.path.join(ARGOCD, "health.lua")) as f:
        script = f.read()
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    assert result is not None, "health.lua returned nothing"
    return result["status"], result["message"]


class ArgoCdHealthTest(unittest.TestCase):
    def test_health_test_yaml_cases(self):
        cases = health_tests()
        self.assertGreaterEqual(len(cases), 10)
        for case in cases:
            with self.subTest(input=case["inputPath"]):
                obj = load_yaml(os.path.join(ARGOCD, case["inputPath"]))
                want = case["healthStatus"]
                self.assertEqual(evaluate(obj), (want["status"], want["message"]))

    def test_the_contract_cases_are_covered(self):
        by_status = {}
        for case in health_tests():
            by_status.setdefault(case["healthStatus"]["status"], []).append(os.path.basename(case["inputPath"]))
        self.assertEqual(set(by_status), {"Progressing", "Healthy", "Degraded"})
        for name in ("no-status.yaml", "pending.yaml", "generation-behind.yaml"):
            self.assertIn(name, by_status["Progressing"])
        self.assertIn("cancelled.yaml", by_status["Healthy"])
        self.assertIn("failed-image-not-found.yaml", by_status["Degraded"])

    def test_every_testdata_file_is_a_case(self):
        listed = sorted(os.path.basename(c["inputPath"]) for c in health_tests())
        present = sorted(os.listdir(os.path.join(ARGOCD, "testdata")))
        self.assertEqual(listed, present)

    def test_testdata_objects_are_valid_copyimagecancellations(self):
        import jsonschema

        crd = load_yaml(os.path.join(ROOT, "crds", "copyimagecancellations.yaml"))
        (version,) = crd["spec"]["versions"]
        schema = version["schema"]["openAPIV3Schema"]
        for case in health_tests():
            with self.subTest(input=case["inputPath"]):
                jsonschema.validate(load_yaml(os.path.join(ARGOCD, case["inputPath"])), schema)

    def test_argocd_cm_patch_carries_health_lua_verbatim(self):
        import tempfile

        patch_path = os.path.join(ARGOCD, "argocd-cm-health-patch.yaml")
        key = "resource.customizations.health.ecs.alibabacloud.com_CopyImageCancellation"
        with open(os.path.join(ARGOCD, "health.lua")) as f:
            script = f.read()
        patch = load_yaml(patch_path)
        self.assertEqual(patch["data"][key], script, "regenerate deploy/argocd/argocd-cm-health-patch.yaml from health.lua")
        common.validate_strict(self, [patch])
        # The documented command works on an existing argocd-cm and keeps its other keys.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as existing:
            existing.write("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: argocd-cm, namespace: argocd}\ndata: {url: https://argocd.example.com}\n")
            existing.flush()
            _, out, _ = common.run([common.KUBECTL, "patch", "--local", "-f", existing.name, "--type", "merge", "--patch-file", patch_path, "-o", "yaml"])
        patched = common.documents(out)[0]["data"]
        self.assertEqual(patched, {"url": "https://argocd.example.com", key: script})

    def test_script_has_no_global_side_effects(self):
        # Argo CD reuses nothing between calls, but a script that leaks globals
        # is a bug waiting to happen: only `obj` may be read, nothing written.
        lua = lua_runtime()
        before = set(lua.eval("(function() local t = {} for k in pairs(_G) do t[#t + 1] = k end return t end)()").values())
        obj = load_yaml(os.path.join(ARGOCD, "testdata", "cancelled.yaml"))
        lua.globals().obj = to_lua(lua, obj)
        with open(os.path.join(ARGOCD, "health.lua")) as f:
            lua.execute(f.read())
        after = set(lua.eval("(function() local t = {} for k in pairs(_G) do t[#t + 1] = k end return t end)()").values())
        self.assertEqual(after - before, {"obj"} - before)


if __name__ == "__main__":
    common.main()
