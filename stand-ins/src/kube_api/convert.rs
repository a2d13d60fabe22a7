//! core/v1 Event as a view of events.k8s.io/v1 Event: one stored object, two API versions,
//! converted field by field as the API server's `events/v1` conversion does.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core/v1 field) pairs that only differ in name.
const RENAMES: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(object: Value, to_core: bool, api_version: &str) -> Value {
    let Value::Object(map) = object else {
        return object;
    };
    let mut out = Map::new();
    for (key, value) in map {
        let renamed = RENAMES
            .iter()
            .find(|(events, core)| {
                if to_core {
                    key == *events
                } else {
                    key == *core
                }
            })
            .map(|(events, core)| if to_core { *core } else { *events })
            .unwrap_or(key.as_str())
            .to_string();
        out.insert(renamed, value);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// A stored events.k8s.io/v1 Event as core/v1 sees it.
pub(crate) fn event_to_core(stored: Value) -> Value {
    rename(stored, true, "v1")
}

/// A core/v1 Event as stored (events.k8s.io/v1).
pub(crate) fn event_from_core(core: Value) -> Value {
    rename(core, false, "events.k8s.io/v1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let stored = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"name": "x"}, "note": "hello", "reason": "Cancelled", "reportingController": "c",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}});
        let core = event_to_core(stored.clone());
        assert_eq!(core["involvedObject"]["name"], "x");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["reportingComponent"], "c");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(event_from_core(core), stored);
    }
}
