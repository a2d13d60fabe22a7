"""The chart's monitoring objects through the real helm v4 binary: the
PrometheusRule's groups with the default values are exactly
monitoring/alerts.yaml's, the thresholds, durations and labels follow the
values, the PrometheusRule passes the prometheus-operator CRD schema (as
validators from npm @kubernetes-models/prometheus-operator, run by node) and a
strict shape check, the dashboard ConfigMap passes strict Kubernetes
validation and carries monitoring/dashboard.json, the chart's copy of the
dashboard has not drifted, every runbook_url names a section of
docs/alerts.md, every alert has promtool unit tests that fire and that do
not, and the values schema refuses typos.

Run by tests/monitoring.rs with the .tools/ venv python (scripts/install-tools.sh)
and .tools/monitoring (scripts/install-monitoring.sh); without them it FAILS.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CHART, HELM, ROOT, by_kind, documents, one, run  # noqa: E402

import yaml  # noqa: E402

MONITORING_TOOLS = os.path.join(ROOT, ".tools", "monitoring")
ALERTS = os.path.join(ROOT, "monitoring", "alerts.yaml")
ALERT_TESTS = os.path.join(ROOT, "monitoring", "tests", "alerts_test.yaml")
DASHBOARD = os.path.join(ROOT, "monitoring", "dashboard.json")
CHART_DASHBOARD = os.path.join(CHART, "dashboards", "copyimage-canceller.json")
DOCS = os.path.join(ROOT, "docs", "alerts.md")
FIX = "run scripts/install-monitoring.sh (installs node_modules from monitoring/tools/package-lock.json into .tools/monitoring)"
RUNBOOK_BASE = "https://github.com/OWNER/copyimage-canceller/blob/main/docs/alerts.md"

RULE_KEYS = {"alert", "expr", "for", "labels", "annotations"}
ANNOTATIONS = {"summary", "description", "runbook_url"}


def template(values, *extra, expect_ok=True):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(values, f)
    try:
        return run([HELM, "template", "cic", CHART, "--namespace", "platform", "--values", f.name, *extra], expect_ok=expect_ok)
    finally:
        os.unlink(f.name)


def rendered(values):
    _, out, _ = template(values)
    return documents(out)


def plain_groups():
    with open(ALERTS) as f:
        return yaml.safe_load(f)["groups"]


def github_anchor(heading):
    """The id GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def validate_prometheus_rules(docs):
    """Runs the prometheus-operator CRD validators on each document; returns the errors."""
    script = """
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { readFileSync } from "node:fs";
const problems = [];
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  try { new PrometheusRule(doc).validate(); } catch (e) { problems.push(doc.metadata.name + ": " + e.message); }
}
console.log(JSON.stringify(problems));
"""
    proc = subprocess.run(["node", "--input-type=module", "-e", script], cwd=MONITORING_TOOLS, input=json.dumps(docs),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError("node could not run the PrometheusRule validators (%s): %s" % (FIX, proc.stderr))
    return json.loads(proc.stdout)


class Monitoring(unittest.TestCase):
    def test_prometheus_rule_groups_are_exactly_the_plain_rules_file(self):
        rule = one(self, rendered({"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
        self.assertEqual(rule["spec"]["groups"], plain_groups(),
                         "the chart's PrometheusRule (default values) and monitoring/alerts.yaml differ:\n%s\n---\n%s"
                         % (common.dump(rule["spec"]["groups"]), common.dump(plain_groups())))
        self.assertEqual(rule["apiVersion"], "monitoring.coreos.com/v1")
        self.assertEqual(rule["metadata"]["namespace"], "platform")

    def test_off_by_default(self):
        docs = rendered({})
        self.assertEqual(by_kind(docs, "PrometheusRule"), [])
        self.assertEqual([d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")], [])

    def test_thresholds_durations_and_labels_follow_the_values(self):
        values = {"metrics": {"prometheusRule": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "ruleLabels": {"team": "platform"},
            "runbookBaseUrl": "https://docs.example.com/copyimage-canceller/alerts",
            "down": {"for": "7m"},
            "noLeader": {"for": "11m"},
            "resourcesStuck": {"ageSeconds": 7200, "for": "13m"},
            "resourcesFailed": {"window": "2h"},
            "ecsThrottling": {"perSecond": 1.5, "for": "17m"},
            "credentialRefreshFailing": {"for": "19m"},
            "credentialsUnusable": {"for": "23m"},
            "statusWriteErrors": {"perSecond": 0.25, "for": "29m"},
            "reconcileErrors": {"perSecond": 0.5, "for": "31m"},
            "ecsEndpointUnavailable": {"for": "37m"},
        }}}
        rule = one(self, rendered(values), "PrometheusRule")
        self.assertEqual(rule["metadata"]["labels"]["release"], "prometheus")
        rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
        plain = {r["alert"]: r for r in plain_groups()[0]["rules"]}
        self.assertEqual(set(rules), set(plain))
        want = {
            "CopyImageCancellerDown": ("7m", None, "for 7m"),
            "CopyImageCancellerNoLeader": ("11m", None, "for 11m"),
            "CopyImageCancellerResourcesStuck": ("13m", "> 7200", "threshold 7200s"),
            "CopyImageCancellerResourcesFailed": (None, "[2h]", "in the last 2h"),
            "CopyImageCancellerEcsThrottling": ("17m", "> 1.5", "(threshold 1.5/s)"),
            "CopyImageCancellerCredentialRefreshFailing": ("19m", None, "for 19m"),
            "CopyImageCancellerCredentialsUnusable": ("23m", None, "for 23m"),
            "CopyImageCancellerStatusWriteErrors": ("29m", "> 0.25", "(threshold 0.25/s)"),
            "CopyImageCancellerReconcileErrors": ("31m", "> 0.5", "(threshold 0.5/s)"),
            "CopyImageCancellerEcsEndpointUnavailable": ("37m", None, "for 37m"),
        }
        self.assertEqual(set(want), set(plain), "a new alert needs a row here")
        for name, (duration, in_expr, in_description) in want.items():
            r = rules[name]
            self.assertEqual(r.get("for"), duration, name)
            if in_expr:
                self.assertIn(in_expr, r["expr"], name)
            self.assertIn(in_description, r["annotations"]["description"], name)
            self.assertEqual(r["labels"], dict(plain[name]["labels"], team="platform"), name)
            self.assertEqual(r["annotations"]["runbook_url"],
                             "https://docs.example.com/copyimage-canceller/alerts#" + name.lower(), name)
        self.assertIn("offset 2h", rules["CopyImageCancellerResourcesFailed"]["expr"])
        # Nothing is left over from the defaults.
        self.assertNotIn("3600", json.dumps(rules["CopyImageCancellerResourcesStuck"]))
        self.assertEqual(validate_prometheus_rules([rule]), [])

    def test_prometheus_rule_passes_the_crd_schema_and_a_strict_shape_check(self):
        # kubernetes-validate has no PrometheusRule schema: the CRD's, from
        # npm @kubernetes-models/prometheus-operator, checks types and
        # patterns; the shape below checks what it lets through (unknown keys).
        for values in ({"metrics": {"prometheusRule": {"enabled": True}}},
                       {"metrics": {"prometheusRule": {"enabled": True, "ruleLabels": {"severity": "page"}}}}):
            rule = one(self, rendered(values), "PrometheusRule")
            self.assertEqual(validate_prometheus_rules([rule]), [])
            self.assertEqual(set(rule), {"apiVersion", "kind", "metadata", "spec"})
            self.assertEqual(set(rule["metadata"]), {"name", "namespace", "labels"})
            self.assertEqual(set(rule["spec"]), {"groups"})
            for group in rule["spec"]["groups"]:
                self.assertEqual(set(group), {"name", "rules"})
                for r in group["rules"]:
                    self.assertTrue(set(r) <= RULE_KEYS, "unknown keys in %s: %s" % (r.get("alert"), set(r) - RULE_KEYS))
                    self.assertEqual(set(r["annotations"]), ANNOTATIONS, r["alert"])
                    self.assertIn(r["labels"]["severity"], ("critical", "warning", "page"), r["alert"])
        # The validators do refuse a bad rule, so a pass means something.
        bad = json.loads(json.dumps(rule))
        bad["metadata"]["name"] = "bad"
        bad["spec"]["groups"][0]["rules"][0]["for"] = 5
        self.assertEqual(len(validate_prometheus_rules([bad])), 1)

    def test_dashboard_configmap_is_valid_and_carries_the_dashboard(self):
        values = {"metrics": {"dashboard": {"enabled": True, "labels": {"team": "platform"},
                                            "annotations": {"grafana_folder": "Operators"}}}}
        docs = rendered(values)
        maps = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "cic-copyimage-canceller-dashboard"]
        self.assertEqual(len(maps), 1)
        (cm,) = maps
        common.validate_strict(self, [cm])
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        self.assertEqual(cm["metadata"]["labels"]["team"], "platform")
        self.assertEqual(cm["metadata"]["annotations"], {"grafana_folder": "Operators"})
        self.assertEqual(cm["metadata"]["namespace"], "platform")
        with open(DASHBOARD) as f:
            self.assertEqual(json.loads(cm["data"]["copyimage-canceller.json"]), json.load(f))
        # Another sidecar label and namespace.
        docs = rendered({"metrics": {"dashboard": {"enabled": True, "labelKey": "grafana.example.com/dashboard",
                                                   "labelValue": "true", "namespace": "monitoring"}}})
        (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
        common.validate_strict(self, [cm])
        self.assertEqual(cm["metadata"]["labels"]["grafana.example.com/dashboard"], "true")
        self.assertNotIn("grafana_dashboard", cm["metadata"]["labels"])
        self.assertEqual(cm["metadata"]["namespace"], "monitoring")

    def test_chart_dashboard_is_the_repository_dashboard(self):
        with open(DASHBOARD, "rb") as a, open(CHART_DASHBOARD, "rb") as b:
            self.assertTrue(a.read() == b.read(),
                            "charts/copyimage-canceller/dashboards/copyimage-canceller.json differs from monitoring/dashboard.json: "
                            "cp monitoring/dashboard.json charts/copyimage-canceller/dashboards/copyimage-canceller.json")

    def test_every_runbook_url_names_a_section_of_docs_alerts(self):
        with open(DOCS) as f:
            anchors = {github_anchor(m.group(1)) for m in re.finditer(r"(?m)^#{1,6}\s+(.+?)\s*$", f.read())}
        for group in plain_groups():
            for r in group["rules"]:
                url = r["annotations"]["runbook_url"]
                self.assertEqual(url, RUNBOOK_BASE + "#" + r["alert"].lower(), r["alert"])
                self.assertIn(r["alert"].lower(), anchors, "docs/alerts.md has no section %s" % r["alert"])
                for key in ("summary", "description"):
                    self.assertTrue(r["annotations"][key].strip(), "%s has no %s" % (r["alert"], key))

    def test_every_alert_has_unit_tests_that_fire_and_that_do_not(self):
        with open(ALERT_TESTS) as f:
            tests = yaml.safe_load(f)["tests"]
        firing, quiet = set(), set()
        for test in tests:
            for case in test.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else quiet).add(case["alertname"])
        alerts = {r["alert"] for g in plain_groups() for r in g["rules"]}
        self.assertEqual(alerts - firing, set(), "alerts no unit test sees firing")
        self.assertEqual(alerts - quiet, set(), "alerts no unit test sees quiet")

    def test_values_schema_rejects_typos_and_wrong_types(self):
        cases = [
            ({"metrics": {"prometheusRule": {"enabled": True, "resourcesStuck": {"ageSecond": 60}}}}, "ageSecond"),
            ({"metrics": {"prometheusRule": {"enabled": True, "down": {"for": "5 minutes"}}}}, "/metrics/prometheusRule/down/for"),
            ({"metrics": {"prometheusRule": {"enabled": True, "ecsThrottling": {"perSecond": "fast"}}}}, "/metrics/prometheusRule/ecsThrottling/perSecond"),
            ({"metrics": {"prometheusRule": {"enabled": True, "runbookBaseUrl": "docs/alerts.md"}}}, "/metrics/prometheusRule/runbookBaseUrl"),
            ({"metrics": {"prometheusRule": {"enabled": True, "ruleLabels": {"team": 1}}}}, "/metrics/prometheusRule/ruleLabels/team"),
            ({"metrics": {"dashboard": {"enabled": True, "lableKey": "x"}}}, "lableKey"),
            ({"metrics": {"dashboard": {"enabled": True, "labelKey": ""}}}, "/metrics/dashboard/labelKey"),
        ]
        for values, needle in cases:
            code, _, err = template(values, expect_ok=False)
            self.assertNotEqual(code, 0, values)
            self.assertIn(needle, err, values)

    def test_alerts_need_the_admin_server(self):
        code, _, err = template({"admin": {"enabled": False}, "metrics": {"prometheusRule": {"enabled": True}}}, expect_ok=False)
        self.assertNotEqual(code, 0)
        self.assertIn("metrics.prometheusRule.enabled needs admin.enabled=true", err)


def require_monitoring_tools():
    if not os.path.isdir(os.path.join(MONITORING_TOOLS, "node_modules", "@kubernetes-models", "prometheus-operator")):
        raise AssertionError("%s has no prometheus-operator models: %s" % (MONITORING_TOOLS, FIX))


if __name__ == "__main__":
    require_monitoring_tools()
    common.main()
