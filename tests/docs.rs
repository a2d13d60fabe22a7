//! The docs, checked: in README.md, docs/, CONTRIBUTING.md, SECURITY.md,
//! BENCHMARKS.md, CHANGELOG.md and every chart README, each relative link
//! names a file that exists, each `#anchor` names a heading (by GitHub's
//! slug rule) or an explicit `<a id>`/`name` of its page, and each repository
//! path named in code (`src/...`, `tests/run_*.rs`, `charts/...`) exists.
//!
//! Docs are moved and files renamed often; a link that 404s on GitHub, or a
//! path a reader cannot find, is found here instead of by a newcomer. The
//! Markdown is parsed with pulldown-cmark, so links in tables, reference
//! links and code spans are read as GitHub renders them. No network: links
//! with a scheme (`https:`, `mailto:`) are not followed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// The Markdown files whose links and paths are checked, relative to `root`.
fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "SECURITY.md",
        "BENCHMARKS.md",
        "CHANGELOG.md",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|f| root.join(f).is_file())
    .collect();
    walk(root, Path::new("docs"), &mut |f| {
        f.extension().is_some_and(|e| e == "md")
    })
    .into_iter()
    .for_each(|f| files.push(f));
    walk(root, Path::new("charts"), &mut |f| {
        f.file_name().is_some_and(|n| n == "README.md")
    })
    .into_iter()
    .for_each(|f| files.push(f));
    files
}

/// Files under `root/dir` (relative to `root`) that `keep` accepts, sorted.
fn walk(root: &Path, dir: &Path, keep: &mut dyn FnMut(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return found;
    };
    let mut entries: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
    entries.sort();
    for name in entries {
        let rel = dir.join(&name);
        if root.join(&rel).is_dir() {
            found.extend(walk(root, &rel, keep));
        } else if keep(&rel) {
            found.push(rel);
        }
    }
    found
}

/// GitHub's heading anchor: lower case, every character that is not a
/// letter, digit, mark, space, `-` or `_` dropped, spaces turned into `-`.
/// (Duplicates get `-1`, `-2`, ...: see [`anchors`].)
fn github_slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The Markdown extensions GitHub renders that change what is a link.
fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
}

/// Every anchor a page defines: its headings' slugs (with GitHub's `-1`,
/// `-2` for repeats) and the `id`/`name` attributes of its raw HTML.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let base = github_slug(&heading.take().unwrap_or_default());
                let n = seen.entry(base.clone()).or_insert(0);
                found.insert(if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                });
                *n += 1;
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Html(h) | Event::InlineHtml(h) => found.extend(html_ids(&h)),
            _ => {}
        }
    }
    found
}

/// The values of `id="..."` and `name="..."` attributes in raw HTML.
fn html_ids(html: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for attr in [" id=", " name="] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let Some(quote) = rest.chars().next().filter(|q| *q == '"' || *q == '\'') else {
                continue;
            };
            if let Some(end) = rest[1..].find(quote) {
                ids.push(rest[1..1 + end].to_string());
            }
        }
    }
    ids
}

/// `%XX` escapes decoded (link destinations may be percent-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `base/rel` with `.` and `..` resolved lexically; `None` when it climbs out
/// of the repository.
fn join_inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = Vec::new();
    for c in base.join(rel).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// `true` for a destination with a URL scheme (`https:`, `mailto:`), which
/// this test does not follow.
fn has_scheme(dest: &str) -> bool {
    match dest.find(':') {
        Some(i) => {
            let scheme = &dest[..i];
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !dest[..i].contains('/')
        }
        None => false,
    }
}

/// What the docs may call a repository path: the repository root's entries
/// that are not build output or local tool directories (`.gitignore`'s
/// `/name` lines), so `target/...` in a sentence is not taken for a path.
fn top_level(root: &Path) -> BTreeSet<String> {
    let ignored: BTreeSet<String> = fs::read_to_string(root.join(".gitignore"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix('/'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".git" && !ignored.contains(n))
        .collect()
}

/// The words of code text that name a repository path, each as written.
/// A word names one when its first component is a top-level entry followed
/// by `/` (`src/main.rs`, `charts/copyimage-canceller/crds/`), or when it is
/// a capitalised Markdown file name (`CONTRIBUTING.md`), which only the root
/// holds. Templates (`fuzz/corpus/<target>/`, `{regionId}`, `$VAR`) are
/// skipped: they name no one file. In a `kubectl` command only the words
/// after a file flag (`-f`, `-k`, `--patch-file` ...) count, because
/// `deploy/copyimage-canceller` there is a Deployment, not the `deploy/` folder.
fn code_paths(code: &str, top: &BTreeSet<String>) -> Vec<String> {
    const FILE_FLAGS: [&str; 5] = ["-f", "-k", "--filename", "--kustomize", "--patch-file"];
    let mut paths = Vec::new();
    for line in code.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || "=()[],;'\"`|".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        let kubectl = words.first() == Some(&"kubectl");
        for (i, word) in words.iter().enumerate() {
            if kubectl && !(i > 0 && FILE_FLAGS.contains(&words[i - 1])) {
                continue;
            }
            if let Some(path) = as_path(word, top) {
                paths.push(path);
            }
        }
    }
    paths
}

/// `word` as a repository path, when it names one (see [`code_paths`]).
fn as_path(word: &str, top: &BTreeSet<String>) -> Option<String> {
    let word = word.trim_end_matches(['.', ':']);
    let word = word.strip_prefix("./").unwrap_or(word);
    if word.is_empty() || word.contains(['<', '>', '{', '}', '$', '…']) || word.contains("...") {
        return None;
    }
    let first = word.split('/').next().unwrap();
    let is_path = word.contains('/') && top.contains(first);
    let is_root_doc = !word.contains('/')
        && word.ends_with(".md")
        && word[..word.len() - 3]
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_');
    (is_path || is_root_doc).then(|| word.to_string())
}

/// `true` when `path` (relative to `root`) exists; a `*` in its last
/// component matches any run of characters, and at least one entry must match.
fn path_exists(root: &Path, path: &str) -> bool {
    let trimmed = path.trim_end_matches('/');
    if !trimmed.contains('*') {
        let full = root.join(trimmed);
        return if path.ends_with('/') {
            full.is_dir()
        } else {
            full.exists()
        };
    }
    let (dir, pattern) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if dir.contains('*') {
        return false;
    }
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return false;
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .any(|n| glob_match(pattern, &n))
}

/// `*`-only glob matching.
fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// What [`check`] found.
#[derive(Debug, Default)]
struct Report {
    /// Every broken link, anchor and path, as `file:line: what is wrong`, in file order.
    problems: Vec<String>,
    /// Relative links followed (so a parser that finds none cannot pass unseen).
    links: usize,
    /// Repository paths looked up.
    paths: usize,
}

/// Checks every link, anchor and code path in `files` (relative to `root`).
fn check(root: &Path, files: &[PathBuf]) -> Report {
    let top = top_level(root);
    let mut anchor_cache: BTreeMap<PathBuf, Option<BTreeSet<String>>> = BTreeMap::new();
    let mut anchors_of = |file: &Path| -> Option<BTreeSet<String>> {
        anchor_cache
            .entry(file.to_path_buf())
            .or_insert_with(|| {
                fs::read_to_string(root.join(file))
                    .ok()
                    .map(|t| anchors(&t))
            })
            .clone()
    };
    let mut report = Report::default();
    for file in files {
        let text = fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let dir = file.parent().unwrap_or(Path::new(""));
        let mut in_code_block = false;
        for (event, range) in Parser::new_ext(&text, options()).into_offset_iter() {
            let at = format!("{}:{}", file.display(), line_of(&text, range.start));
            match event {
                Event::Start(Tag::Link { dest_url, .. })
                | Event::Start(Tag::Image { dest_url, .. }) => {
                    let dest = dest_url.trim();
                    if dest.is_empty() {
                        report
                            .problems
                            .push(format!("{at}: empty link destination"));
                        continue;
                    }
                    if has_scheme(dest) {
                        continue;
                    }
                    report.links += 1;
                    let (target, anchor) = match dest.split_once('#') {
                        Some((t, a)) => (t, Some(percent_decode(a))),
                        None => (dest, None),
                    };
                    let target = percent_decode(target.split('?').next().unwrap());
                    let target_file = if target.is_empty() {
                        file.clone()
                    } else {
                        match join_inside(dir, &target) {
                            Some(p) if root.join(&p).exists() => p,
                            Some(_) => {
                                report.problems.push(format!(
                                    "{at}: link `{dest}`: no such file or directory"
                                ));
                                continue;
                            }
                            None => {
                                report.problems.push(format!(
                                    "{at}: link `{dest}` points outside the repository"
                                ));
                                continue;
                            }
                        }
                    };
                    let Some(anchor) = anchor else { continue };
                    if target_file.extension().is_some_and(|e| e == "md") {
                        if !anchors_of(&target_file)
                            .unwrap_or_default()
                            .contains(&anchor)
                        {
                            report.problems.push(format!(
                                "{at}: link `{dest}`: no heading or id `{anchor}` in {}",
                                target_file.display()
                            ));
                        }
                    } else if !is_line_anchor(&anchor) {
                        report.problems.push(format!("{at}: link `{dest}`: anchor `{anchor}` into a file that is not Markdown"));
                    }
                }
                Event::Start(Tag::CodeBlock(kind)) => {
                    // Indented blocks are quoted output more often than commands.
                    in_code_block = matches!(kind, CodeBlockKind::Fenced(_));
                }
                Event::End(TagEnd::CodeBlock) => in_code_block = false,
                Event::Code(code) => check_paths(root, &top, &code, &at, &mut report),
                Event::Text(t) if in_code_block => {
                    // A block is one Text event or a few: report by its own lines.
                    for (i, line) in t.lines().enumerate() {
                        let at = format!("{}:{}", file.display(), line_of(&text, range.start) + i);
                        check_paths(root, &top, line, &at, &mut report);
                    }
                }
                _ => {}
            }
        }
    }
    report
}

/// GitHub's line anchors into source files: `L12` or `L12-L20`.
fn is_line_anchor(anchor: &str) -> bool {
    anchor.split('-').all(|p| {
        p.strip_prefix('L')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Records each repository path named in `code` that does not exist.
fn check_paths(root: &Path, top: &BTreeSet<String>, code: &str, at: &str, report: &mut Report) {
    for path in code_paths(code, top) {
        report.paths += 1;
        if !path_exists(root, &path) {
            report
                .problems
                .push(format!("{at}: path `{path}` does not exist"));
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_link_anchor_and_path_in_the_docs_resolves() {
    let root = repo_root();
    let files = doc_files(&root);
    for required in [
        "README.md",
        "docs/README.md",
        "charts/copyimage-canceller/README.md",
    ] {
        assert!(
            files.iter().any(|f| f == Path::new(required)),
            "{required} is not among the checked files: {files:?}"
        );
    }
    let report = check(&root, &files);
    assert!(
        report.problems.is_empty(),
        "{} broken link(s), anchor(s) or path(s) in the docs:\n{}",
        report.problems.len(),
        report.problems.join("\n")
    );
    // The docs hold about 80 links and 170 paths; far fewer means the parser
    // went blind.
    assert!(
        report.links >= 40 && report.paths >= 100,
        "only {} links and {} paths checked in {} files",
        report.links,
        report.paths,
        files.len()
    );
    eprintln!(
        "checked {} links and {} paths in {} files",
        report.links,
        report.paths,
        files.len()
    );
}

#[test]
fn the_readme_links_every_docs_page() {
    let root = repo_root();
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let linked: BTreeSet<String> = Parser::new_ext(&readme, options())
        .filter_map(|e| match e {
            Event::Start(Tag::Link { dest_url, .. }) => {
                Some(dest_url.split('#').next().unwrap().to_string())
            }
            _ => None,
        })
        .collect();
    let missing: Vec<String> = walk(&root, Path::new("docs"), &mut |f| {
        f.extension().is_some_and(|e| e == "md")
    })
    .into_iter()
    .map(|f| f.to_string_lossy().replace('\\', "/"))
    .filter(|f| !linked.contains(f))
    .collect();
    assert!(
        missing.is_empty(),
        "README.md does not link these docs pages: {missing:?}"
    );
}

#[test]
fn slugs_follow_githubs_rule() {
    for (heading, slug) in [
        ("Install", "install"),
        (
            "What the RBAC grants, and why",
            "what-the-rbac-grants-and-why",
        ),
        (
            "Leader election (several replicas)",
            "leader-election-several-replicas",
        ),
        ("`cancel`", "cancel"),
        ("API-server load", "api-server-load"),
        ("snake_case and 1.2.3", "snake_case-and-123"),
        ("Ünïcode stays", "ünïcode-stays"),
        ("A  double  space", "a--double--space"),
    ] {
        assert_eq!(github_slug(heading), slug, "{heading}");
    }
    let page = "# Notes\n## Notes\n## `run` flags\n### Notes\n<a id=\"kept\"></a>\n<a name='old-name'></a>\n";
    let expected: BTreeSet<String> = [
        "notes",
        "notes-1",
        "notes-2",
        "run-flags",
        "kept",
        "old-name",
    ]
    .map(String::from)
    .into();
    assert_eq!(anchors(page), expected);
}

#[test]
fn code_paths_are_told_from_other_code() {
    let top: BTreeSet<String> = ["src", "tests", "Cargo.toml", "README.md"]
        .map(String::from)
        .into();
    for (code, paths) in [
        ("src/main.rs", vec!["src/main.rs"]),
        ("cargo test --test e2e", vec![]),
        (
            "kubectl apply -f tests/x.yaml --server-side",
            vec!["tests/x.yaml"],
        ),
        ("(`src/a.rs`),", vec!["src/a.rs"]),
        ("fuzz/corpus/<target>/", vec![]),
        ("src/{a,b}.rs", vec![]),
        ("https://ecs.{regionId}.aliyuncs.com", vec![]),
        ("registry.example.com/platform/x:0.1.0", vec![]),
        ("--values=src/values.yaml", vec!["src/values.yaml"]),
        ("target/tmp/soak-1/", vec![]),
        ("CONTRIBUTING.md", vec!["CONTRIBUTING.md"]),
        ("values.yaml", vec![]),
        ("tests/run_*.rs.", vec!["tests/run_*.rs"]),
        ("kubectl -n x logs tests/pod", vec![]),
        (
            "kubectl apply -f tests/a.yaml -k src/b --patch-file=src/c.yaml",
            vec!["tests/a.yaml", "src/b", "src/c.yaml"],
        ),
        ("src/a.rs\nsrc/b.rs", vec!["src/a.rs", "src/b.rs"]),
    ] {
        assert_eq!(code_paths(code, &top), paths, "{code}");
    }
    assert!(glob_match("run_*.rs", "run_pacing.rs"));
    assert!(glob_match("signature*.rs", "signature.rs"));
    assert!(!glob_match("run_*.rs", "run_pacing.rsx"));
    assert!(!glob_match("run_*.rs", "e2e.rs"));
}

/// The checker itself, on a small repository with one of each mistake: it
/// must name every one, and nothing that is right.
#[test]
fn the_checker_reports_every_kind_of_break() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    let write = |path: &str, text: &str| {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
    };
    write(".gitignore", "/target\n");
    write("target/built.txt", "");
    write("src/lib.rs", "");
    write("src/run_a.rs", "");
    write("tests/kept.rs", "");
    write(
        "README.md",
        "# Top\n\n## Same\n\n## Same\n\n\
         [ok](docs/a.md) [ok](docs/a.md#a-page) [ok](#same-1) [ok](src/) [ok](src/lib.rs#L3)\n\
         [ok](https://example.com/nowhere.md) [ok](docs/a.md#kept)\n\
         [gone](docs/missing.md)\n\
         [bad anchor](#same-2)\n\
         [bad other anchor](docs/a.md#nope)\n\
         [outside](../elsewhere.md)\n\
         [anchor into code](src/lib.rs#main)\n\n\
         Paths: `src/lib.rs`, `src/run_*.rs`, `target/other.txt`, `src/gone.rs`, `src/nope_*.rs`.\n\n\
         | a | b |\n|---|---|\n| [in a table](docs/absent.md) | `tests/none.rs` |\n\n\
         ```sh\ncargo run\nkubectl apply -f src/missing.yaml\nkubectl logs src/lib-pod\n```\n",
    );
    write(
        "docs/a.md",
        "# A page\n\n<a id=\"kept\"></a>\n\n[up](../README.md#top) [up](../README.md#nah)\n",
    );
    let report = check(
        root,
        &[PathBuf::from("README.md"), PathBuf::from("docs/a.md")],
    );
    let mut problems = report.problems;
    problems.sort();
    let mut expected = vec![
        "README.md:9: link `docs/missing.md`: no such file or directory",
        "README.md:10: link `#same-2`: no heading or id `same-2` in README.md",
        "README.md:11: link `docs/a.md#nope`: no heading or id `nope` in docs/a.md",
        "README.md:12: link `../elsewhere.md` points outside the repository",
        "README.md:13: link `src/lib.rs#main`: anchor `main` into a file that is not Markdown",
        "README.md:15: path `src/gone.rs` does not exist",
        "README.md:15: path `src/nope_*.rs` does not exist",
        "README.md:19: link `docs/absent.md`: no such file or directory",
        "README.md:19: path `tests/none.rs` does not exist",
        "README.md:23: path `src/missing.yaml` does not exist",
        "docs/a.md:5: link `../README.md#nah`: no heading or id `nah` in README.md",
    ];
    expected.sort();
    assert_eq!(problems, expected);
    assert_eq!((report.links, report.paths), (14, 6));
}
