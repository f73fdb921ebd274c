//! No import cycles among `switchboard-core`'s modules.
//!
//! Reads `shared/src` as text and draws one node per file (`lib.rs` is the crate root,
//! `x/mod.rs` is `x`, `x/y.rs` is `x::y`) and an edge for every path that names an item of
//! another module: `use` statements (braces expanded) and paths in code that start with
//! `crate::`, `super::` or `self::`. A path to an item that a module only re-exports
//! (`pub use child::Item`) leads to the module that defines it. Test modules
//! (`#[cfg(test)] mod tests`) and comments are left out. A module naming its own
//! descendants is not an edge (declaring and re-exporting its children is a parent's
//! job); every other edge counts, a child naming its parent's items included.
//!
//! The check fails with each cycle and the references that close it. A second check keeps
//! the configuration a leaf: `config` may name only its own sections, `secret` and
//! `auth::format`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

type Module = String;

struct Source {
    module: Module,
    text: String,
}

fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without comments, string literals' contents and `#[cfg(test)] mod tests`.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == '*' && bytes[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    // Drop test modules: from `#[cfg(test)]` + `mod` to the matching brace.
    let mut result = String::new();
    let mut rest = out.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        if !after.starts_with("mod ") {
            result.push_str(&rest[..at + "#[cfg(test)]".len()]);
            rest = &rest[at + "#[cfg(test)]".len()..];
            continue;
        }
        result.push_str(&rest[..at]);
        let Some(open) = rest[at..].find('{') else {
            rest = "";
            break;
        };
        let mut depth = 0usize;
        let mut end = rest.len();
        for (offset, ch) in rest[at + open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + open + offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    result.push_str(rest);
    result
}

/// `a::{b::C, d}` → `["a::b::C", "a::d"]` (nested braces too; `self` inside braces names
/// the prefix itself).
fn expand(tree: &str) -> Vec<String> {
    // Whitespace only matters around `as`.
    let mut tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    for token in ["::", "{", "}", ","] {
        tree = tree
            .replace(&format!(" {token}"), token)
            .replace(&format!("{token} "), token);
    }
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = tree[..open].trim_end_matches("::").to_string();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            if p == "self" {
                vec![prefix.clone()]
            } else {
                expand(p)
                    .into_iter()
                    .map(|e| format!("{prefix}::{e}"))
                    .collect()
            }
        })
        .collect()
}

struct UseStatement {
    public: bool,
    paths: Vec<String>,
}

fn use_statements(code: &str) -> Vec<UseStatement> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = find_keyword(rest, "use") {
        let before = rest[..at].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        let tree = rest[at + 3..end].trim();
        found.push(UseStatement {
            public,
            paths: expand(tree),
        });
        rest = &rest[end..];
    }
    found
}

/// The position of `word` as a whole word.
fn find_keyword(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = text[from..].find(word) {
        let at = from + pos;
        let before_ok = at == 0
            || !text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after_ok = !text[at + word.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// Paths in code that start with `crate::`, `super::` or `self::`.
fn code_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if starts_word && (chars[i].is_alphabetic() || chars[i] == '_') {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == ':')
            {
                j += 1;
            }
            let path: String = chars[i..j].iter().collect();
            let path = path.trim_end_matches(':').to_string();
            if ["crate::", "super::", "self::"]
                .iter()
                .any(|p| path.starts_with(p))
            {
                paths.push(path);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    paths
}

struct Graph {
    modules: BTreeSet<Module>,
    /// (module, name) → the path it re-exports, resolved from that module.
    reexports: HashMap<(Module, String), (Module, String)>,
}

fn parent(module: &str) -> Option<Module> {
    if module.is_empty() {
        None
    } else {
        Some(
            module
                .rsplit_once("::")
                .map_or(String::new(), |(p, _)| p.to_string()),
        )
    }
}

fn join(module: &str, segment: &str) -> Module {
    if module.is_empty() {
        segment.to_string()
    } else {
        format!("{module}::{segment}")
    }
}

impl Graph {
    /// The module a path (as written in `from`) leads to: the deepest module it names, or
    /// for an item only re-exported there, the module that defines it.
    fn resolve(&self, from: &str, path: &str, depth: usize) -> Option<Module> {
        self.resolve_with(from, path, depth, true)
    }

    /// [`Graph::resolve`], or, with `follow_reexports` false, the file a path lands in:
    /// naming `crate::chat::Item` depends on `chat/mod.rs` whatever it re-exports.
    fn resolve_with(
        &self,
        from: &str,
        path: &str,
        depth: usize,
        follow_reexports: bool,
    ) -> Option<Module> {
        let mut segments = path.split("::").filter(|s| !s.is_empty()).peekable();
        let mut at: Module = match segments.peek().copied() {
            Some("crate") => {
                segments.next();
                String::new()
            }
            Some("self") => {
                segments.next();
                from.to_string()
            }
            Some("super") => {
                let mut at = from.to_string();
                while segments.peek() == Some(&"super") {
                    segments.next();
                    at = parent(&at)?;
                }
                at
            }
            _ => {
                // A child of `from` (`use child::Item` in a parent) or an external crate.
                let first = segments.peek()?;
                let child = join(from, first);
                if !self.modules.contains(&child) {
                    return None;
                }
                from.to_string()
            }
        };
        for segment in segments {
            let child = join(&at, segment);
            if self.modules.contains(&child) {
                at = child;
                continue;
            }
            if follow_reexports
                && depth < 8
                && let Some((target_from, target_path)) =
                    self.reexports.get(&(at.clone(), segment.to_string()))
            {
                return self.resolve(target_from, target_path, depth + 1);
            }
            return Some(at);
        }
        Some(at)
    }
}

fn is_within(module: &str, ancestor: &str) -> bool {
    ancestor.is_empty() || module == ancestor || module.starts_with(&format!("{ancestor}::"))
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// Every file of `shared/src` as a module, and the graph's re-exports.
fn load() -> (Vec<Source>, Graph) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let sources: Vec<Source> = files
        .iter()
        .map(|f| Source {
            module: module_of(&root, f),
            text: code_of(&std::fs::read_to_string(f).unwrap()),
        })
        .collect();
    let mut graph = Graph {
        modules: sources.iter().map(|s| s.module.clone()).collect(),
        reexports: HashMap::new(),
    };
    for source in &sources {
        for statement in use_statements(&source.text) {
            if !statement.public {
                continue;
            }
            for path in statement.paths {
                let (path, name) = match path.split_once(" as ") {
                    Some((p, alias)) => (p.to_string(), alias.to_string()),
                    None => (path.clone(), path.rsplit("::").next().unwrap().to_string()),
                };
                if name != "*" && name != "self" {
                    graph
                        .reexports
                        .insert((source.module.clone(), name), (source.module.clone(), path));
                }
            }
        }
    }

    (sources, graph)
}

/// The report of each cycle with the references that close it (empty: none).
fn cycle_report(
    edges: &BTreeMap<Module, BTreeSet<Module>>,
    why: &BTreeMap<(Module, Module), BTreeSet<String>>,
) -> String {
    let mut report = String::new();
    for component in &cycles(edges) {
        report.push_str(&format!("\ncycle among {component:?}:\n"));
        for from in component {
            for to in edges[from].iter().filter(|t| component.contains(t)) {
                let refs: Vec<&String> = why[&(from.clone(), to.clone())].iter().take(3).collect();
                report.push_str(&format!("  {from} -> {to}  ({refs:?})\n"));
            }
        }
    }
    report
}

#[test]
fn core_modules_import_each_other_without_cycles() {
    let (sources, graph) = load();
    // Edges, with the references that make them (for the failure message).
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut why: BTreeMap<(Module, Module), BTreeSet<String>> = BTreeMap::new();
    for source in &sources {
        edges.entry(source.module.clone()).or_default();
        let mut paths: Vec<String> = use_statements(&source.text)
            .into_iter()
            .flat_map(|s| s.paths)
            .map(|p| p.split(" as ").next().unwrap().to_string())
            .collect();
        paths.extend(code_paths(&source.text));
        for path in paths {
            let Some(target) = graph.resolve(&source.module, &path, 0) else {
                continue;
            };
            if target == source.module || is_within(&target, &source.module) {
                continue;
            }
            edges
                .entry(source.module.clone())
                .or_default()
                .insert(target.clone());
            why.entry((source.module.clone(), target))
                .or_default()
                .insert(path);
        }
    }
    assert!(
        edges.len() > 20 && edges.values().map(BTreeSet::len).sum::<usize>() > 40,
        "the scan found too little to judge: {edges:?}"
    );

    // The configuration is a leaf: domain modules import their section, never the reverse.
    let allowed =
        |target: &str| is_within(target, "config") || ["secret", "auth::format"].contains(&target);
    let config_imports: Vec<String> = edges
        .iter()
        .filter(|(from, _)| is_within(from, "config"))
        .flat_map(|(from, to)| {
            to.iter()
                .filter(|t| !allowed(t))
                .map(move |t| format!("{from} -> {t}"))
        })
        .collect();
    assert!(
        config_imports.is_empty(),
        "the configuration imports domain modules: {config_imports:?}"
    );

    let report = cycle_report(&edges, &why);
    assert!(report.is_empty(), "import cycles in shared/src:{report}");
}

/// The same at file level (STYLE.md rule 13): each `.rs` file a node, an edge to the file a
/// path lands in — `crate::chat::Item` names `chat/mod.rs`, whatever that file re-exports —
/// and a parent's code naming its children's items counts like any other reference (only
/// its `mod` declarations and `pub use` re-exports do not). A file that builds the world
/// (`state.rs`) imported by the core it builds closes a circle here.
#[test]
fn core_files_import_each_other_without_cycles() {
    let (sources, graph) = load();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut why: BTreeMap<(Module, Module), BTreeSet<String>> = BTreeMap::new();
    for source in &sources {
        edges.entry(source.module.clone()).or_default();
        let mut paths: Vec<String> = use_statements(&source.text)
            .into_iter()
            .filter(|s| !s.public)
            .flat_map(|s| s.paths)
            .map(|p| p.split(" as ").next().unwrap().to_string())
            .collect();
        paths.extend(code_paths(&source.text));
        for path in paths {
            let Some(target) = graph.resolve_with(&source.module, &path, 0, false) else {
                continue;
            };
            if target == source.module {
                continue;
            }
            edges
                .entry(source.module.clone())
                .or_default()
                .insert(target.clone());
            why.entry((source.module.clone(), target))
                .or_default()
                .insert(path);
        }
    }
    let report = cycle_report(&edges, &why);
    assert!(
        report.is_empty(),
        "import cycles between files of shared/src:{report}"
    );
}

#[test]
fn the_scanner_sees_a_cycle_when_there_is_one() {
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges.insert("a".into(), ["b".to_string()].into());
    edges.insert("b".into(), ["c".to_string()].into());
    edges.insert("c".into(), ["a".to_string()].into());
    edges.insert("d".into(), ["a".to_string()].into());
    assert_eq!(cycles(&edges), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        expand("crate::a::{b::C as G, d::{\n E, F}, self}"),
        [
            "crate::a::b::C as G",
            "crate::a::d::E",
            "crate::a::d::F",
            "crate::a"
        ]
    );
    let code = code_of(
        "use crate::x; // crate::y\n#[cfg(test)]\nmod tests { use crate::z; }\nfn f() { crate::w::g() }",
    );
    assert_eq!(code_paths(&code), ["crate::x", "crate::w::g"]);
}

/// The composition root is imported only by `http` (and the doors, outside this crate); the
/// core run and the inbound formats never speak HTTP: they return their own errors, and
/// `http/error.rs` alone turns them into statuses and bodies.
#[test]
fn only_http_builds_the_world_and_the_core_speaks_no_http() {
    let (sources, graph) = load();
    let mut offences = Vec::new();
    for source in &sources {
        let mut paths: Vec<String> = use_statements(&source.text)
            .into_iter()
            .flat_map(|s| s.paths)
            .map(|p| p.split(" as ").next().unwrap().to_string())
            .collect();
        paths.extend(code_paths(&source.text));
        for path in paths {
            let Some(target) = graph.resolve_with(&source.module, &path, 0, false) else {
                continue;
            };
            let names_state = target == "state" && !is_within(&source.module, "http");
            let core_names_http = is_within(&target, "http")
                && ["chat", "inbound"]
                    .iter()
                    .any(|core| is_within(&source.module, core));
            if (names_state || core_names_http) && source.module != "state" {
                offences.push(format!("{} -> {target} ({path})", source.module));
            }
        }
    }
    assert!(offences.is_empty(), "{offences:#?}");
}
