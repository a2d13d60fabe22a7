//! The alerts and the dashboard proven with real parts: `promtool` checks and
//! unit-tests `monitoring/alerts.yaml`; the chart's PrometheusRule and
//! dashboard ConfigMap go through helm (tests/packaging/test_monitoring.py);
//! `tsc` type-checks `monitoring/dashboard.json` against Grafana's published
//! dashboard types (npm `@grafana/schema`); and a real Prometheus server
//! scrapes the real `run` binary's `/metrics` during a run against the
//! in-process API and the ECS simulator, loads the rules, and answers every
//! expression of the rules and of the dashboard with data.
//!
//! Needs `.tools/monitoring` from `scripts/install-monitoring.sh` (Debian's
//! prometheus package and the npm pins) and `.tools/` from
//! `scripts/install-tools.sh`; without them these tests FAIL (never skip).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tool::run_tool;
use common::{Env, PATIENCE, SandboxOptions, cic, http_get, operator_key};
use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind, QuotaLimits, SimulatorConfig};
use regex::Regex;
use serde_json::Value;

const FIX: &str = "run scripts/install-monitoring.sh (installs Debian's pinned prometheus package and the npm pins of monitoring/tools into .tools/monitoring)";

/// The `namespace` target label the test's scrape config gives, as Kubernetes
/// service discovery would.
const NAMESPACE: &str = "copyimage-canceller-e2e";
const REGION: &str = "cn-hangzhou";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool under `.tools/monitoring`, or a failure saying how to install it.
fn tool(relative: &str) -> PathBuf {
    let path = root().join(".tools/monitoring").join(relative);
    assert!(path.exists(), "{} is missing: {FIX}", path.display());
    path
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    let promtool = tool("bin/promtool");
    let checked =
        run_tool(Command::new(&promtool).args(["check", "rules", "monitoring/alerts.yaml"]));
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_tool(Command::new(&promtool).args([
        "test",
        "rules",
        "monitoring/tests/alerts_test.yaml",
    ]));
    assert!(tested.contains("SUCCESS"), "{tested}");
    println!("{checked}{tested}");
}

#[test]
fn chart_renders_the_same_alerts_and_the_dashboard() {
    let python = root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-tools.sh",
        python.display()
    );
    let _ = tool("node_modules/@kubernetes-models/prometheus-operator/package.json");
    let report = run_tool(
        Command::new(&python)
            .arg("tests/packaging/test_monitoring.py")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    // unittest ends with "OK"; anything else (e.g. no test ran) is a failure.
    assert!(
        report.lines().any(|l| l.starts_with("Ran ")) && report.trim_end().ends_with("OK"),
        "tests/packaging/test_monitoring.py did not report success:\n{report}"
    );
    println!("{report}");
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("monitoring/dashboard.json"))
        .expect("monitoring/dashboard.json");
    serde_json::from_str(&text).expect("monitoring/dashboard.json is JSON")
}

/// Runs `tsc --noEmit --strict` on the dashboard typed as `@grafana/schema`'s
/// `Dashboard` (an enum written as its value, as JSON has no enums); the
/// compiler's report on failure.
fn type_check(dashboard: &Value) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("dashboard-check-")
        .tempdir_in(tool(""))
        .expect("temp dir under .tools/monitoring");
    // NB: an object literal, not an imported .json, so that unknown keys are errors.
    let source = format!(
        "import type {{ Dashboard }} from \"@grafana/schema\";\n\
         type Json<T> = T extends string ? `${{T}}` : T extends number | boolean | null | undefined ? T\n\
           : T extends Array<infer U> ? Array<Json<U>> : {{ [K in keyof T]: Json<T[K]> }};\n\
         export const dashboard: Json<Dashboard> = {};\n",
        serde_json::to_string_pretty(dashboard).unwrap()
    );
    std::fs::write(dir.path().join("dashboard-check.ts"), source).unwrap();
    std::fs::write(
        dir.path().join("tsconfig.json"),
        r#"{"compilerOptions": {"strict": true, "noEmit": true, "module": "esnext",
            "moduleResolution": "bundler", "target": "es2022", "types": []},
            "files": ["dashboard-check.ts"]}"#,
    )
    .unwrap();
    let output = Command::new(tool("node_modules/.bin/tsc"))
        .args(["-p", "tsconfig.json"])
        .current_dir(dir.path())
        .output()
        .expect("run tsc");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn dashboard_matches_grafanas_published_dashboard_schema() {
    let board = dashboard();
    if let Err(report) = type_check(&board) {
        panic!("monitoring/dashboard.json is not a @grafana/schema Dashboard:\n{report}");
    }
    // The check does refuse what Grafana would not read.
    let mut broken = board.clone();
    broken["schemaVersion"] = "39".into();
    broken["panels"][0]["colapsed"] = true.into();
    let report = type_check(&broken).expect_err("a broken dashboard passed tsc");
    assert!(
        report.contains("schemaVersion") || report.contains("number"),
        "{report}"
    );
    assert!(report.contains("colapsed"), "{report}");
}

/// The dashboard's template variables by name.
fn variables(board: &Value) -> BTreeMap<String, Value> {
    board["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect()
}

/// Every panel (rows' nested panels included).
fn panels(board: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in board["panels"].as_array().expect("panels") {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// `(panel title, expr, legendFormat)` of every dashboard query.
fn dashboard_queries(board: &Value) -> Vec<(String, String, String)> {
    panels(board)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                (
                    title.clone(),
                    t["expr"].as_str().unwrap_or_default().to_string(),
                    t["legendFormat"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn dashboard_templating_is_consistent() {
    let board = dashboard();
    let vars = variables(&board);
    assert_eq!(
        vars.keys().map(String::as_str).collect::<Vec<_>>(),
        ["datasource", "namespace", "region"]
    );
    assert_eq!(vars["datasource"]["type"], "datasource");
    assert_eq!(vars["datasource"]["query"], "prometheus");
    let builtin = ["__rate_interval", "__interval", "__range"];
    let used = Regex::new(r"\$\{?(\w+)\}?").unwrap();
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let mut ids = BTreeSet::new();
    for panel in panels(&board) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_i64().expect("panel id")),
            "{title}: duplicate id"
        );
        let pos = &panel["gridPos"];
        assert!(
            pos["x"].as_i64().unwrap() + pos["w"].as_i64().unwrap() <= 24,
            "{title}: wider than the grid"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], datasource, "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"], datasource, "{title}");
            let expr = target["expr"].as_str().expect("expr");
            for name in used.captures_iter(expr).map(|c| c[1].to_string()) {
                assert!(
                    vars.contains_key(&name) || builtin.contains(&name.as_str()),
                    "{title}: ${name} is no template variable: {expr}"
                );
            }
            // Every query is scoped by the namespace variable.
            assert!(
                expr.contains("namespace=~\"$namespace\""),
                "{title}: {expr}"
            );
        }
    }
    for name in ["namespace", "region"] {
        let var = &vars[name];
        assert_eq!(var["datasource"], datasource, "{name}");
        let query = var["query"]["query"].as_str().expect("query");
        assert!(
            label_values(query).is_some(),
            "{name}: not label_values(metric, label): {query}"
        );
    }
}

/// `label_values(selector, label)` as `(selector, label)`.
fn label_values(query: &str) -> Option<(String, String)> {
    let re = Regex::new(r"^label_values\((.+),\s*(\w+)\)$").unwrap();
    let c = re.captures(query.trim())?;
    Some((c[1].trim().to_string(), c[2].to_string()))
}

/// One question for Prometheus: what it is, the query, and the labels each
/// answered series must carry.
struct Question {
    what: String,
    query: String,
    labels: BTreeSet<String>,
}

/// `{{ x }}`-style label references: `{{x}}` in a legend, `$labels.x` in an annotation.
fn referenced_labels(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\{\{\s*(\w+)\s*\}\}|\$labels\.(\w+)").unwrap();
    re.captures_iter(text)
        .map(|c| c.get(1).or(c.get(2)).unwrap().as_str().to_string())
        .collect()
}

/// What an alert's expression measures, before its threshold: `absent(E)` and
/// `E > 0.05` both ask about `E`, which must have data on a healthy run.
fn without_threshold(expr: &str) -> String {
    let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(inner) = expr
        .strip_prefix("absent(")
        .and_then(|e| e.strip_suffix(')'))
    {
        return inner.to_string();
    }
    let re = Regex::new(r"^(.*?)\s*(==|!=|<=|>=|<|>)\s*-?[0-9.]+(e[+-]?[0-9]+)?$").unwrap();
    re.captures(&expr)
        .map_or(expr.clone(), |c| c[1].to_string())
}

/// Every question the rules and the dashboard make, with the dashboard's
/// variables set to what this run has.
fn questions() -> Vec<Question> {
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("monitoring/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let selector = Regex::new(r#"copyimage_canceller_\w+(\{[^}]*\})?"#).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            let description = rule["annotations"]["description"].as_str().unwrap();
            out.push(Question {
                what: format!("alert {name} (without its threshold)"),
                query: without_threshold(expr),
                labels: referenced_labels(description),
            });
            for m in selector.find_iter(expr) {
                out.push(Question {
                    what: format!("alert {name}, selector"),
                    query: m.as_str().to_string(),
                    labels: BTreeSet::new(),
                });
            }
        }
    }
    let board = dashboard();
    let set = |q: &str| {
        q.replace("$__rate_interval", "30s")
            .replace("$__interval", "15s")
            .replace("$__range", "5m")
            .replace("$namespace", NAMESPACE)
            .replace("$region", REGION)
    };
    for (title, expr, legend) in dashboard_queries(&board) {
        out.push(Question {
            what: format!("dashboard panel {title:?}"),
            query: set(&expr),
            labels: referenced_labels(&legend),
        });
    }
    for (name, var) in variables(&board) {
        if let Some((selector, label)) = var["query"]["query"].as_str().and_then(label_values) {
            out.push(Question {
                what: format!("dashboard variable ${name}"),
                query: format!("count by ({label}) ({})", set(&selector)),
                labels: BTreeSet::from([label]),
            });
        }
    }
    out
}

/// Percent-encodes a query parameter.
fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// GET `path` on Prometheus's HTTP API; the `data` of a success, else the error.
async fn api(addr: &str, path: &str) -> Result<Value, String> {
    let (code, body) = http_get(addr, path)
        .await
        .ok_or_else(|| "Prometheus did not answer".to_string())?;
    let answer: Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
    if answer["status"] == "success" {
        Ok(answer["data"].clone())
    } else {
        Err(format!(
            "HTTP {code}: {} {}",
            answer["errorType"].as_str().unwrap_or_default(),
            answer["error"].as_str().unwrap_or_default()
        ))
    }
}

/// Asks `question` over the run so far; `Ok` when some series answered and
/// each carries the labels it must, else what is wrong.
async fn ask(addr: &str, question: &Question, start: f64) -> Result<(), String> {
    let end = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    let data = api(
        addr,
        &format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=1",
            encode(&question.query)
        ),
    )
    .await?;
    let series = data["result"].as_array().cloned().unwrap_or_default();
    if series.is_empty() {
        return Err("no data".into());
    }
    for s in &series {
        for label in &question.labels {
            if s["metric"][label].as_str().unwrap_or_default().is_empty() {
                return Err(format!("a series without label {label:?}: {}", s["metric"]));
            }
        }
    }
    Ok(())
}

/// A free loopback port for Prometheus (it cannot report one it chose).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server scraping `target` every second with the alert rules
/// loaded; killed when dropped.
struct Prometheus {
    _child: tokio::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: copyimage-canceller\n    static_configs:\n      \
             - targets: ['{target}']\n        labels:\n          namespace: {NAMESPACE}\n",
            rules = root().join("monitoring/alerts.yaml").display(),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new(tool("bin/prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Self {
            _child: child,
            addr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// Polls `check` until it returns `Ok`; after [`PATIENCE`], fails with its
/// last error and Prometheus's log.
async fn until<F, Fut>(env: &Env, prometheus: &Prometheus, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(()) => return,
            Err(err) if tokio::time::Instant::now() > deadline => env.fail(&format!(
                "{what}: {err}\n--- prometheus log ---\n{}",
                prometheus.log()
            )),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A region-wide 503 answer (an outage), then a small backlog against the
/// simulator's quota (throttling and pacing), a retried InternalError and a
/// terminal InvalidImageId.NotFound, scraped
/// by a real Prometheus: the rules load and evaluate without error, and
/// every expression of the rules (without its threshold) and of the
/// dashboard (its variables set to this run's namespace and region) answers
/// with data that carries the labels the annotations and legends name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_answers_every_rule_and_dashboard_query() {
    let mut simulator = SimulatorConfig::new([operator_key()]);
    // NB: a few requests a second, so a backlog of 20 throttles and is paced.
    simulator.quota = QuotaLimits {
        per_second: Some(4),
        per_minute: None,
    };
    let mut options = SandboxOptions {
        simulator,
        ..SandboxOptions::default()
    };
    options
        .controller_args
        .extend(["--admin-addr".to_string(), "127.0.0.1:0".to_string()]);
    let mut env = Env::sandbox_with(options).await;
    env.start_controller();
    let admin = env.wait_admin_addr(|| env.controller_log(), "").await;
    let prometheus = Prometheus::start(&admin);
    let start = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0 - 1.0;
    until(
        &env,
        &prometheus,
        "Prometheus scrapes the operator",
        || async {
            let data = api(&prometheus.addr, "/api/v1/query?query=up").await?;
            match data["result"][0]["value"][1].as_str() {
                Some("1") => Ok(()),
                other => Err(format!("up is {other:?}")),
            }
        },
    )
    .await;

    // First a region-wide failure (503 ServiceUnavailable: with the outage
    // breaker, one such answer holds the region's requests until a probe gets
    // through), then the backlog arrives while it lasts.
    env.copying("m-monitoredoutage");
    env.fault(
        "m-monitoredoutage",
        FaultKind::ServiceUnavailable,
        FaultCount::Times(3),
    );
    env.create(&cic("outage", "m-monitoredoutage")).await;
    env.eventually("the first 503 answered", |env| {
        !env.ecs_requests("m-monitoredoutage").is_empty()
    })
    .await;
    let mut names = Vec::new();
    for i in 0..20 {
        let image = format!("m-monitored{i:03}");
        env.copying(&image);
        names.push((format!("backlog-{i:03}"), image));
    }
    env.copying("m-monitoredflaky");
    env.fault(
        "m-monitoredflaky",
        FaultKind::InternalError,
        FaultCount::Times(1),
    );
    names.push(("flaky".into(), "m-monitoredflaky".into()));
    // Any other image ID is absent: InvalidImageId.NotFound, terminal.
    names.push(("gone".into(), "m-monitoredgone".into()));
    let resources: Vec<_> = names.iter().map(|(name, image)| cic(name, image)).collect();
    futures::future::join_all(resources.iter().map(|r| env.create(r))).await;
    for name in names
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(["outage"])
    {
        env.wait_finished(name).await;
    }

    // Every rule loaded and evaluated without error.
    until(&env, &prometheus, "the alert rules evaluate", || async {
        let data = api(&prometheus.addr, "/api/v1/rules").await?;
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        if rules.len() < 10 {
            return Err(format!("{} rules loaded", rules.len()));
        }
        let unhealthy: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if unhealthy.is_empty() {
            Ok(())
        } else {
            Err(format!("rules not healthy: {unhealthy:?}"))
        }
    })
    .await;

    // The terminal failure fires its alert in the real Prometheus, by reason.
    until(&env, &prometheus, "CopyImageCancellerResourcesFailed fires", || async {
        let data = api(&prometheus.addr, "/api/v1/alerts").await?;
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        let failed = alerts.iter().find(|a| {
            a["labels"]["alertname"] == "CopyImageCancellerResourcesFailed"
                && a["labels"]["reason"] == "InvalidImageIdNotFound"
        });
        let Some(alert) = failed else {
            return Err(format!("not among the alerts: {alerts:?}"));
        };
        assert_eq!(alert["labels"]["namespace"], NAMESPACE, "{alert}");
        assert_eq!(alert["labels"]["job"], "copyimage-canceller", "{alert}");
        assert_eq!(
            alert["annotations"]["description"],
            format!(
                "1 CopyImageCancellation(s) handled by copyimage-canceller in namespace {NAMESPACE} \
                 ended Failed with reason InvalidImageIdNotFound in the last 30m."
            ),
            "{alert}"
        );
        match alert["state"].as_str() {
            Some("firing") => Ok(()),
            other => Err(format!("state {other:?}")),
        }
    })
    .await;

    // Every question answered; on failure, name each one that was not.
    let questions = questions();
    assert!(questions.len() > 30, "{} questions", questions.len());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut unanswered = Vec::new();
        for q in &questions {
            if let Err(err) = ask(&prometheus.addr, q, start).await {
                unanswered.push(format!("{}: {err}\n    {}", q.what, q.query));
            }
        }
        if unanswered.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            env.fail(&format!(
                "{} of {} queries returned no data or failed:\n  {}",
                unanswered.len(),
                questions.len(),
                unanswered.join("\n  ")
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    env.cleanup().await;
}

#[test]
fn thresholds_come_off_the_alert_expressions() {
    let rows = [
        (
            "absent(copyimage_canceller_leader)",
            "copyimage_canceller_leader",
        ),
        (
            "max by (job, namespace) (copyimage_canceller_leader) < 1",
            "max by (job, namespace) (copyimage_canceller_leader)",
        ),
        (
            "sum by (a) (\n  (increase(x[30m]) > 0)\n  or\n  (x unless x offset 30m)\n) > 0",
            "sum by (a) ( (increase(x[30m]) > 0) or (x unless x offset 30m) )",
        ),
        ("sum(rate(x[5m])) > 0.05", "sum(rate(x[5m]))"),
        ("x == 1", "x"),
        ("x", "x"),
    ];
    for (expr, want) in rows {
        assert_eq!(without_threshold(expr), want, "{expr}");
    }
    assert_eq!(
        referenced_labels("{{ $labels.job }} in {{ $labels.namespace }} {{region}} {{ $value }}"),
        BTreeSet::from(["job".into(), "namespace".into(), "region".into()])
    );
    assert_eq!(
        label_values("label_values(m{namespace=~\"$namespace\"}, region)"),
        Some(("m{namespace=~\"$namespace\"}".into(), "region".into()))
    );
}
