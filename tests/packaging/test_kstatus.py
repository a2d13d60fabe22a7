"""kstatus (sigs.k8s.io/cli-utils pkg/kstatus/status, the library Flux, Helm
--wait and kpt use) reads the CopyImageCancellation statuses the way the Argo
CD health check does: Current = Healthy, InProgress = Progressing, Failed =
Degraded. kstatus's rules for a custom resource are re-implemented here
(checkGenericProperties, then the Ready-condition fallback, then "Current"),
and applied to the same testdata as health_test.yaml."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from test_argocd_health import ARGOCD, evaluate, health_tests, load_yaml  # noqa: E402

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"
ARGO_FOR = {CURRENT: "Healthy", IN_PROGRESS: "Progressing", FAILED: "Degraded"}


def compute(obj):
    """kstatus status.Compute for a kind without built-in rules: (status, message)."""
    metadata = obj.get("metadata", {})
    status = obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    # checkGeneration: only when both fields exist.
    generation = metadata.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return IN_PROGRESS, "%s generation is %d, but latest observed generation is %d" % (obj["kind"], generation, observed)
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return IN_PROGRESS, condition.get("message", "")
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return FAILED, condition.get("message", "")
    # checkReadyCondition
    for condition in conditions:
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return CURRENT, "Resource is Ready"
        if condition.get("status") in ("False", "Unknown"):
            return IN_PROGRESS, condition.get("message", "")
    return CURRENT, "Resource is current"


# Where kstatus is more lenient than the health check: without conditions it
# assumes the resource is done. The controller never leaves a resource there:
# its first reconcile writes Reconciling=True before anything is sent, so Flux
# and `helm --wait` only see that state in the moment before the first reconcile.
KSTATUS_DIFFERS = {
    "no-status.yaml": (CURRENT, "Resource is current"),
    "status-without-conditions.yaml": (CURRENT, "Resource is current"),
}


class KstatusTest(unittest.TestCase):
    def test_kstatus_agrees_with_the_argocd_health_check(self):
        rows = []
        for case in health_tests():
            name = os.path.basename(case["inputPath"])
            obj = load_yaml(os.path.join(ARGOCD, case["inputPath"]))
            kstatus, message = compute(obj)
            argo, argo_message = evaluate(obj)
            rows.append("%-48s kstatus %-11s argocd %s" % (name, kstatus, argo))
            with self.subTest(input=name):
                self.assertEqual(argo, case["healthStatus"]["status"])
                if name in KSTATUS_DIFFERS:
                    self.assertEqual((kstatus, message), KSTATUS_DIFFERS[name])
                    self.assertEqual(argo, "Progressing")
                    continue
                self.assertEqual(ARGO_FOR[kstatus], argo)
                if kstatus != CURRENT:
                    # Same words in `flux get`/`kubectl wait` output and the Argo CD UI.
                    self.assertEqual(message, argo_message)
        print("\n" + "\n".join(rows))

    def test_table_of_kstatus_rules(self):
        def cic(status=None, generation=1, **metadata):
            obj = {"apiVersion": "ecs.alibabacloud.com/v1alpha1", "kind": "CopyImageCancellation",
                   "metadata": dict(name="x", namespace="images", generation=generation, **metadata)}
            if status is not None:
                obj["status"] = status
            return obj

        def cond(type_, status, message="m"):
            return {"type": type_, "status": status, "reason": "R", "message": message}

        rows = [
            (cic(), (CURRENT, "Resource is current")),
            (cic({"observedGeneration": 1, "conditions": [cond("Ready", "False"), cond("Reconciling", "True", "busy"), cond("Stalled", "False")]}), (IN_PROGRESS, "busy")),
            (cic({"observedGeneration": 1, "conditions": [cond("Ready", "False"), cond("Reconciling", "False"), cond("Stalled", "True", "gave up")]}), (FAILED, "gave up")),
            (cic({"observedGeneration": 1, "conditions": [cond("Ready", "True"), cond("Reconciling", "False"), cond("Stalled", "False")]}), (CURRENT, "Resource is Ready")),
            (cic({"observedGeneration": 1, "conditions": [cond("Ready", "Unknown", "?")]}), (IN_PROGRESS, "?")),
            (cic({"observedGeneration": 1, "conditions": [cond("Ready", "True")]}, generation=3), (IN_PROGRESS, "CopyImageCancellation generation is 3, but latest observed generation is 1")),
            # No observedGeneration: kstatus skips the generation check.
            (cic({"conditions": [cond("Ready", "True")]}, generation=3), (CURRENT, "Resource is Ready")),
            (cic({"observedGeneration": 1}, deletionTimestamp="2026-11-27T10:00:00Z"), (TERMINATING, "Resource scheduled for deletion")),
        ]
        for obj, want in rows:
            with self.subTest(status=obj.get("status"), metadata=obj["metadata"]):
                self.assertEqual(compute(obj), want)


if __name__ == "__main__":
    common.main()
