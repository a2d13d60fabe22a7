//! The layout docs/architecture.md describes, checked: no module imports run in a
//! circle (in the operator, the stand-ins and the fuzz support), no lower
//! layer of the operator imports a higher one, and the stand-ins crate never
//! depends on the operator.
//!
//! The parser is deliberately small. A module's imports are the paths it
//! names outside comments, string and character literals and
//! `#[cfg(test)]` modules: every `use` tree (braces expanded), every
//! `crate::`/`super::`/`self::` path, and every `child::` path naming one of
//! its own child modules. A path points at the deepest file module it names
//! (`super::FetchError` is the parent, even when the parent only re-exports
//! it: the reader sees an import from the parent). Modules are the files
//! reached by `mod name;` from the crate root; an inline `mod name { .. }`
//! counts as part of the file that holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// A module's path from the crate root (`["identity", "cache"]`); the root is `[]`.
type ModPath = Vec<String>;

/// The non-test modules of one crate, each with its source stripped of
/// comments, literals and test modules.
struct Crate {
    modules: BTreeMap<ModPath, String>,
}

impl Crate {
    /// Follows `mod name;` from the root file, reading files with `read`.
    fn load(root: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Self {
        let decl = Regex::new(r"\bmod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;").unwrap();
        let mut modules = BTreeMap::new();
        let mut pending = vec![(ModPath::new(), root.to_path_buf())];
        while let Some((path, file)) = pending.pop() {
            let source = read(&file).unwrap_or_else(|| panic!("cannot read {}", file.display()));
            let code = without_test_modules(&strip(&source));
            // Children of `a/mod.rs` (and the root) live in `a/`; of `a.rs`, in `a/` too.
            let stem = file.file_stem().unwrap().to_str().unwrap();
            let dir = if path.is_empty() || stem == "mod" {
                file.parent().unwrap().to_path_buf()
            } else {
                file.with_extension("")
            };
            for child in decl.captures_iter(&code) {
                let name = &child[1];
                let flat = dir.join(format!("{name}.rs"));
                let nested = dir.join(name).join("mod.rs");
                let found = [flat, nested]
                    .into_iter()
                    .find(|f| read(f).is_some())
                    .unwrap_or_else(|| panic!("no file for `mod {name};` in {}", file.display()));
                let mut child_path = path.clone();
                child_path.push(name.to_owned());
                pending.push((child_path, found));
            }
            modules.insert(path, code);
        }
        Self { modules }
    }

    /// Loads the crate whose root file is `root`, relative to the repository.
    fn from_disk(root: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
        Self::load(&root, &|p| std::fs::read_to_string(p).ok())
    }

    /// Which modules each module imports (itself left out).
    fn imports(&self) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
        let use_decl = Regex::new(r"\buse\s+([^;]+);").unwrap();
        let relative =
            Regex::new(r"\b(?:crate|super|self)(?:\s*::\s*[A-Za-z_][A-Za-z0-9_]*)+").unwrap();
        let mut graph = BTreeMap::new();
        for (module, code) in &self.modules {
            let mut targets = BTreeSet::new();
            let mut add = |segments: Vec<String>| {
                if let Some(target) = self.resolve(module, &segments)
                    && &target != module
                {
                    targets.insert(target);
                }
            };
            for tree in use_decl.captures_iter(code) {
                for path in expand_use_tree(&tree[1]) {
                    add(path);
                }
            }
            let rest = use_decl.replace_all(code, ";");
            for path in relative.find_iter(&rest) {
                add(split_path(path.as_str()));
            }
            for child in self.children(module) {
                let child_path = Regex::new(&format!(r"(?:^|[^:\w]){child}\s*::")).unwrap();
                if child_path.is_match(&rest) {
                    add(vec![child.clone()]);
                }
            }
            graph.insert(module.clone(), targets);
        }
        graph
    }

    /// The names of `module`'s child modules.
    fn children(&self, module: &ModPath) -> Vec<String> {
        self.modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m.last().unwrap().clone())
            .collect()
    }

    /// The deepest module a path names, seen from `from`; `None` for paths
    /// into other crates.
    fn resolve(&self, from: &ModPath, segments: &[String]) -> Option<ModPath> {
        let (mut base, mut rest) = match segments.first().map(String::as_str) {
            Some("crate") => (ModPath::new(), &segments[1..]),
            Some("self") => (from.clone(), &segments[1..]),
            Some("super") => {
                let mut base = from.clone();
                let mut rest = segments;
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            Some(first) if self.children(from).iter().any(|c| c == first) => {
                (from.clone(), segments)
            }
            _ => return None,
        };
        while let Some(next) = rest.first() {
            let mut deeper = base.clone();
            deeper.push(next.clone());
            if !self.modules.contains_key(&deeper) {
                break;
            }
            base = deeper;
            rest = &rest[1..];
        }
        Some(base)
    }
}

/// `a :: b` as `["a", "b"]`.
fn split_path(path: &str) -> Vec<String> {
    path.split("::").map(|s| s.trim().to_owned()).collect()
}

/// Every path a `use` tree names: `super::{a::{B, C}, d}` gives
/// `super::a::B`, `super::a::C` and `super::d` (`self` in braces names the
/// prefix; aliases and globs end a path).
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    let tokens = Regex::new(r"[A-Za-z_][A-Za-z0-9_]*|::|[{},*]")
        .unwrap()
        .find_iter(tree)
        .map(|m| m.as_str().to_owned())
        .collect::<Vec<_>>();
    let mut paths = Vec::new();
    let mut at = 0;
    expand(&tokens, &mut at, &[], &mut paths);
    paths
}

/// Expands one tree at `tokens[*at..]` under `prefix`, until `,` or `}`.
fn expand(tokens: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while let Some(token) = tokens.get(*at) {
        match token.as_str() {
            "::" | "*" => *at += 1,
            "{" => {
                *at += 1;
                while tokens.get(*at).is_some_and(|t| t != "}") {
                    expand(tokens, at, &path, out);
                    if tokens.get(*at).is_some_and(|t| t == ",") {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            "," | "}" => break,
            "as" => *at += 2,
            "self" if !path.is_empty() => *at += 1,
            name => {
                path.push(name.to_owned());
                *at += 1;
            }
        }
    }
    out.push(path);
}

/// `source` without comments, and with string and character literals emptied,
/// so that what is left is code.
fn strip(source: &str) -> String {
    let chars = source.chars().collect::<Vec<_>>();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(rest) {
            // r"..", r#".."#, br#".."#: ends at a quote followed by as many hashes.
            i += rest.iter().position(|&c| c == '"').unwrap() + 1;
            while i < chars.len()
                && !(chars[i] == '"'
                    && chars[i + 1..].iter().take_while(|&&c| c == '#').count() >= hashes)
            {
                i += 1;
            }
            i += 1 + hashes;
            out.push_str("\"\"");
        } else if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if chars[i] == '\'' && rest.get(1) == Some(&'\\') {
            // '\n', '\'', '\u{..}'
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if chars[i] == '\'' && rest.get(2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            // A lifetime's quote, or code.
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The number of hashes if a raw string literal starts here.
fn raw_string_start(rest: &[char]) -> Option<usize> {
    let after_b = if rest.first() == Some(&'b') {
        &rest[1..]
    } else {
        rest
    };
    if after_b.first() != Some(&'r') {
        return None;
    }
    let hashes = after_b[1..].iter().take_while(|&&c| c == '#').count();
    (after_b.get(1 + hashes) == Some(&'"')).then_some(hashes)
}

/// Stripped `code` without `#[cfg(test)] mod name { .. }` and
/// `#[cfg(test)] mod name;` (whose file is then never read).
fn without_test_modules(code: &str) -> String {
    let test_mod = Regex::new(
        r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*([{;])",
    )
    .unwrap();
    let mut out = String::new();
    let mut from = 0;
    while let Some(found) = test_mod.captures_at(code, from) {
        let whole = found.get(0).unwrap();
        out.push_str(&code[from..whole.start()]);
        from = whole.end();
        if &found[1] == "{" {
            let mut depth = 1;
            for (offset, c) in code[from..].char_indices() {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    from += offset + 1;
                    break;
                }
            }
        }
    }
    out.push_str(&code[from..]);
    out
}

/// Every set of two or more modules that import one another round a circle
/// (the strongly connected components, Tarjan's algorithm).
fn circles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a ModPath) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    self.low.insert(v, self.low[v].min(self.low[w]));
                } else if self.stack.contains(&w) {
                    self.low.insert(v, self.low[v].min(self.index[w]));
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().position(|m| *m == v).unwrap();
                let component = self.stack.split_off(at);
                if component.len() > 1 {
                    let mut names = component.iter().map(|m| name(m)).collect::<Vec<_>>();
                    names.sort();
                    self.found.push(names);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

/// `identity::cache`, or `crate` for the root.
fn name(module: &ModPath) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// Fails on any circle among the modules of the crate rooted at `root`,
/// after checking that the modules in `expected` were found.
fn assert_no_circles(root: &str, expected: &[&str]) {
    let krate = Crate::from_disk(root);
    for module in expected {
        assert!(
            krate.modules.contains_key(&split_path(module)),
            "{root}: no module {module}"
        );
    }
    let found = circles(&krate.imports());
    assert!(
        found.is_empty(),
        "modules of {root} import one another in a circle: {found:?}; move what they share \
         into a sibling module that both import"
    );
}

#[test]
fn no_module_circles_in_the_operator() {
    assert_no_circles(
        "src/lib.rs",
        &["identity::cache", "controller::decide", "ecs::client"],
    );
    assert_no_circles("src/main.rs", &[]);
}

#[test]
fn no_module_circles_in_the_stand_ins() {
    assert_no_circles(
        "stand-ins/src/lib.rs",
        &["kube_api::http", "ecs_simulator::server", "sts_simulator"],
    );
}

#[test]
fn no_module_circles_in_the_fuzz_support() {
    assert_no_circles("fuzz/support/src/lib.rs", &[]);
}

/// The operator's layers, lowest first: (module, the modules it must not
/// import; either side includes the modules below it). `resource` knows
/// nothing of HTTP or keys; `ecs` nothing of Kubernetes; nothing below the
/// controller reaches up into it (the controller tells metrics, admin and the
/// pace what happened). `decide` has a test of its own below.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "resource",
        &[
            "controller",
            "ecs",
            "credentials",
            "identity",
            "pacing",
            "metrics",
            "admin",
        ],
    ),
    ("retry", &["controller", "resource"]),
    (
        "ecs",
        &[
            "controller",
            "resource",
            "identity",
            "pacing",
            "metrics",
            "admin",
        ],
    ),
    (
        "credentials",
        &["controller", "identity", "metrics", "admin"],
    ),
    ("identity", &["controller", "metrics", "admin"]),
    ("pacing", &["controller", "admin"]),
    ("metrics", &["controller", "admin"]),
    ("admin", &["controller"]),
];

#[test]
fn lower_layers_of_the_operator_never_import_higher_ones() {
    let krate = Crate::from_disk("src/lib.rs");
    let graph = krate.imports();
    let mut upward = Vec::new();
    for (lower, higher) in LAYERS {
        let lower = split_path(lower);
        assert!(krate.modules.contains_key(&lower), "no module {lower:?}");
        for (module, targets) in graph.iter().filter(|(m, _)| m.starts_with(&lower)) {
            for target in targets {
                if higher.iter().any(|h| target.starts_with(&split_path(h))) {
                    upward.push(format!("{} imports {}", name(module), name(target)));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports running up the layers: {upward:#?}"
    );
}

#[test]
fn decide_is_pure() {
    let krate = Crate::from_disk("src/lib.rs");
    let decide = split_path("controller::decide");
    let allowed = [
        "controller::conditions",
        "ecs",
        "identity",
        "resource",
        "retry",
    ]
    .map(split_path);
    let imports = &krate.imports()[&decide];
    let other: Vec<_> = imports
        .iter()
        .filter(|m| !allowed.iter().any(|a| m.starts_with(a)))
        .map(name)
        .collect();
    assert_eq!(
        other,
        [] as [String; 0],
        "decide imports only these: {allowed:?}"
    );
    let io = Regex::new(r"::now\b|\btokio\b|\breqwest\b|\basync\b|\bInstant\b|\bSystemTime\b");
    let io: Vec<_> = io
        .unwrap()
        .find_iter(&krate.modules[&decide])
        .map(|m| m.as_str())
        .collect();
    assert_eq!(io, [] as [&str; 0], "decide does no I/O and reads no clock");
}

#[test]
fn ecs_knows_nothing_of_kubernetes() {
    let krate = Crate::from_disk("src/lib.rs");
    let kubernetes = Regex::new(r"\b(?:kube|kube_runtime|k8s_openapi)\s*::").unwrap();
    let mut found = Vec::new();
    for (module, code) in krate
        .modules
        .iter()
        .filter(|(m, _)| m.first().is_some_and(|f| f == "ecs"))
    {
        found.extend(
            kubernetes
                .find_iter(code)
                .map(|m| format!("{}: {}", name(module), m.as_str())),
        );
    }
    assert!(
        found.is_empty(),
        "the ECS client names Kubernetes: {found:?}"
    );
}

#[test]
fn the_stand_ins_never_depend_on_the_operator() {
    // NB: --no-deps still lists each member's declared dependencies.
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version=1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed (its error is above)"
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let stand_ins = packages
        .iter()
        .find(|p| p["name"] == "copyimage-stand-ins")
        .expect("the stand-ins crate is a workspace member");
    let dependencies = stand_ins["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect::<Vec<_>>();
    assert!(dependencies.contains(&"axum"), "{dependencies:?}");
    assert!(
        !dependencies.contains(&"copyimage-canceller"),
        "the stand-ins must check the operator with their own code: {dependencies:?}"
    );
    let krate = Crate::from_disk("stand-ins/src/lib.rs");
    for (module, code) in &krate.modules {
        assert!(
            !code.contains("copyimage_canceller"),
            "{} names the operator crate",
            name(module)
        );
    }
}

// The parser itself, on small made-up crates: what counts as an import and
// what does not.

fn made_up(files: &[(&str, &str)]) -> Crate {
    let files = files
        .iter()
        .map(|(path, source)| (PathBuf::from(path), source.to_string()))
        .collect::<BTreeMap<_, _>>();
    Crate::load(Path::new("lib.rs"), &|p| files.get(p).cloned())
}

#[test]
fn a_circle_through_a_grouped_import_is_found() {
    let krate = made_up(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;"),
        (
            "a.rs",
            "pub use self::inner::X;\nmod inner;\nfn f() { crate::b::g() }",
        ),
        ("a/inner.rs", "pub struct X;"),
        ("b.rs", "use super::{c::{self, Y as Z}, d};\npub fn g() {}"),
        ("c/mod.rs", "pub fn h() { super::a::X; }"),
    ]);
    assert_eq!(
        circles(&krate.imports()),
        [vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
    assert_eq!(
        krate.imports()[&vec!["a".to_owned()]].len(),
        2,
        "a imports b and a::inner"
    );
}

#[test]
fn a_parent_and_a_child_importing_each_other_are_a_circle() {
    let krate = made_up(&[
        ("lib.rs", "pub mod m;"),
        (
            "m/mod.rs",
            "mod server;\npub struct Shared;\nfn start() { server::run() }",
        ),
        ("m/server.rs", "use super::Shared;\npub fn run() {}"),
    ]);
    assert_eq!(
        circles(&krate.imports()),
        [vec!["m".to_owned(), "m::server".to_owned()]]
    );
}

#[test]
fn comments_literals_and_test_modules_are_not_imports() {
    let krate = made_up(&[
        ("lib.rs", "mod a;\nmod b;"),
        (
            "a.rs",
            "use crate::b::X;\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod more {\n    use crate::a::*;\n}",
        ),
        (
            "b.rs",
            r##"// use crate::a;
/* crate::a::f() /* nested */ crate::a::g() */
/// [`crate::a`]
pub struct X<'a>(&'a str);
const S: &str = "crate::a::f() \" crate::a";
const R: &str = r#"crate::a::f() " crate::a"#;
const C: char = '"';
fn f() { let _ = crate::a; }
#[cfg(test)]
mod tests {
    use crate::a::*;
    fn g() { let _ = '}'; crate::a::f(); }
}
"##,
        ),
        ("a/tests.rs", "use crate::b::*;"),
    ]);
    let imports = krate.imports();
    assert_eq!(
        imports[&vec!["a".to_owned()]],
        BTreeSet::from([vec!["b".to_owned()]])
    );
    // The one real import left in b is the plain path in `f`, after all the decoys.
    assert_eq!(
        imports[&vec!["b".to_owned()]],
        BTreeSet::from([vec!["a".to_owned()]])
    );
    assert!(
        !krate
            .modules
            .contains_key(&vec!["a".to_owned(), "tests".to_owned()])
    );
}
