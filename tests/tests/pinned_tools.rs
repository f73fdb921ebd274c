//! Every tool the project's scripts install comes from a lock, so a fresh clone runs the
//! same tools on any day (a floating `pip install 'moto[server]'` once broke a fresh
//! clone's test run when moto 5.2.6 came out).
//!
//! Read from the scripts in `scripts/` and `.ci/`:
//! - `pip install` only as `--require-hashes -r <lock>`, and every requirement of the lock
//!   is `name==version` with at least one `--hash=sha256:`; the lock's `.in` file pins
//!   each top-level tool with `==` at the version the lock holds;
//! - npm only as `npm ci` next to a `package.json` of exact versions and its
//!   `package-lock.json` (every package with an integrity hash); no `npm install`, no `npx`;
//!   every `tests/tools/<name>/package-lock.json` is installed by scripts/test (Claude Code,
//!   Codex CLI with its Linux x86-64 binary in the lock, the AI SDK);
//! - `cargo install` only with `--locked` and an exact `--version =x.y.z`;
//! - `apt-get install` only of named Debian packages (no version globs, no other release).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The shell lines of a script that run commands: comments dropped, `\` continuations
/// joined, and the text of `say`/`echo` messages ignored.
fn command_lines(script: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in script.lines() {
        let line = raw.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let joined = std::mem::take(&mut current);
        let trimmed = joined.trim_start();
        if trimmed.starts_with("say ") || trimmed.starts_with("echo ") {
            continue;
        }
        lines.push(joined);
    }
    lines
}

/// A file named in `-r <file>`, relative to the workspace (`$root/` stripped).
fn requirement_file(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "-r" || *w == "--requirement")
        .and_then(|i| words.get(i + 1))
        .map(|file| {
            file.trim_matches('"')
                .trim_start_matches("$root/")
                .to_string()
        })
}

fn is_exact_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
        && version.starts_with(|c: char| c.is_ascii_digit())
}

/// What is wrong with the installs of one script (empty: all pinned). `npm_dirs` are the
/// directories whose lock an `npm ci` in this script installs.
fn unpinned_installs(script: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for line in command_lines(script) {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|w| w.trim_matches(['"', '\'', '(', '{']))
            .collect();
        let has = |a: &str, b: &str| words.windows(2).any(|w| w[0].ends_with(a) && w[1] == b);
        let pip = has("pip", "install") || has("pip3", "install");
        if pip && (!line.contains("--require-hashes") || requirement_file(&line).is_none()) {
            problems.push(format!(
                "pip install without `--require-hashes -r <lock>`: {line}"
            ));
        }
        if has("npm", "install") || has("npm", "i") || words.contains(&"npx") {
            problems.push(format!(
                "npm install/npx instead of `npm ci` from a lockfile: {line}"
            ));
        }
        if has("cargo", "install") {
            let exact = words.windows(2).any(|w| {
                // cargo reads `1.16.0` as `^1.16.0`: only `=1.16.0` is exact.
                w[0] == "--version"
                    && w[1]
                        .strip_prefix('=')
                        .is_some_and(|v| is_exact_version(v) && v.split('.').count() == 3)
            });
            if !exact || !words.contains(&"--locked") {
                problems.push(format!(
                    "cargo install without `--version =x.y.z --locked`: {line}"
                ));
            }
        }
        if has("apt-get", "install") || has("apt", "install") {
            // The words after each `install`, up to a redirection or the next command.
            let packages = words.split(|w| *w == "install").skip(1).flat_map(|after| {
                after.iter().take_while(|w| {
                    !w.starts_with(['>', '|', '&', ';', '}', ')']) && !w.contains('>')
                })
            });
            let bad = packages.clone().any(|w| {
                w.starts_with("-t")
                    || w.starts_with("--target-release")
                    || w.contains(['*', '=', '/', '$'])
            });
            if bad {
                problems.push(format!(
                    "apt-get install of something other than named packages: {line}"
                ));
            }
        }
    }
    problems
}

/// `name==version` → (lower-case name without extras, version), from a pip requirements file.
fn pinned_requirements(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut pins = BTreeMap::new();
    let mut entry = String::new();
    let mut entries = Vec::new();
    for raw in text.lines() {
        let line = raw.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                entry.push_str(head);
                entry.push(' ');
            }
            None => {
                entry.push_str(line);
                entries.push(std::mem::take(&mut entry));
            }
        }
    }
    for entry in entries {
        let requirement = entry.split_whitespace().next().unwrap_or_default();
        if requirement.starts_with('-') {
            return Err(format!("an option line instead of a pin: {entry}"));
        }
        let Some((name, version)) = requirement.split_once("==") else {
            return Err(format!("not pinned with ==: {entry}"));
        };
        if !is_exact_version(version) {
            return Err(format!("not an exact version: {entry}"));
        }
        let name = name.split('[').next().unwrap_or(name).to_lowercase();
        pins.insert(name, format!("{version}{}", hashes_marker(&entry)));
    }
    Ok(pins)
}

fn hashes_marker(entry: &str) -> &'static str {
    if entry.contains("--hash=sha256:") {
        ""
    } else {
        " (no hash)"
    }
}

fn npm_lock_problems(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let read = |name: &str| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let (Some(package), Some(lock)) = (read("package.json"), read("package-lock.json")) else {
        return vec![format!(
            "{}: package.json and package-lock.json must both exist",
            dir.display()
        )];
    };
    for (name, version) in package["dependencies"].as_object().into_iter().flatten() {
        if !version.as_str().is_some_and(is_exact_version) {
            problems.push(format!(
                "{}: {name} is not an exact version ({version})",
                dir.display()
            ));
        }
    }
    for (path, entry) in lock["packages"].as_object().into_iter().flatten() {
        if !path.is_empty() && entry["integrity"].as_str().is_none() && entry["link"].is_null() {
            problems.push(format!(
                "{}: {path} has no integrity hash in the lock",
                dir.display()
            ));
        }
    }
    problems
}

fn scripts() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut found = Vec::new();
    for dir in ["scripts", ".ci"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("the scripts directory") {
            let path = entry.expect("a directory entry").path();
            let is_shell = std::fs::read_to_string(&path)
                .is_ok_and(|text| text.starts_with("#!/usr/bin/env bash"));
            if is_shell {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn every_install_in_the_scripts_is_pinned() {
    let root = workspace_root();
    let scripts = scripts();
    assert!(
        scripts.iter().any(|p| p.ends_with("scripts/test")),
        "scripts/test is among the scripts read: {scripts:?}"
    );
    let mut problems = Vec::new();
    let mut locks = Vec::new();
    for path in &scripts {
        let text = std::fs::read_to_string(path).expect("readable script");
        for problem in unpinned_installs(&text) {
            problems.push(format!("{}: {problem}", path.display()));
        }
        for line in command_lines(&text) {
            if let Some(file) = requirement_file(&line) {
                locks.push(root.join(file));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        locks
            .iter()
            .any(|l| l.ends_with("tests/tools/requirements.txt")),
        "scripts/test installs the Python tools from tests/tools/requirements.txt: {locks:?}"
    );
    for lock in locks {
        let text = std::fs::read_to_string(&lock)
            .unwrap_or_else(|e| panic!("{} (named by a script): {e}", lock.display()));
        let pins = pinned_requirements(&text).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
        let unhashed: Vec<_> = pins
            .iter()
            .filter(|(_, v)| v.ends_with("(no hash)"))
            .collect();
        assert!(unhashed.is_empty(), "{}: {unhashed:?}", lock.display());
        // The top-level pins (the .in file beside the lock) are the versions the lock holds.
        let top = lock.with_extension("in");
        let top_text = std::fs::read_to_string(&top)
            .unwrap_or_else(|e| panic!("{} (beside the lock): {e}", top.display()));
        let top_pins =
            pinned_requirements(&top_text).unwrap_or_else(|e| panic!("{}: {e}", top.display()));
        for (name, version) in top_pins {
            let version = version.trim_end_matches(" (no hash)");
            assert_eq!(
                pins.get(&name).map(String::as_str),
                Some(version),
                "{name} in {} and its lock",
                top.display()
            );
        }
    }
}

/// The Node.js tools of the test command: every `tests/tools/<name>/package.json`.
fn test_tool_npm_dirs() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("tests/tools"))
        .expect("tests/tools")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.join("package.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_npm_lock_is_exact_and_hashed() {
    let root = workspace_root();
    let tools = test_tool_npm_dirs();
    for name in ["claude-code", "codex", "ai-sdk"] {
        assert!(
            tools.iter().any(|dir| dir.ends_with(name)),
            "tests/tools/{name} is among the Node.js tools: {tools:?}"
        );
    }
    let test = std::fs::read_to_string(root.join("scripts/test")).expect("scripts/test");
    for dir in tools.iter().chain([&root.join("bench/portkey")]) {
        let problems = npm_lock_problems(dir);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
    // Each test tool is installed by scripts/test with npm ci from its own lock.
    assert!(test.contains("npm ci"), "scripts/test installs with npm ci");
    for dir in &tools {
        let lock = dir
            .join("package-lock.json")
            .strip_prefix(&root)
            .expect("inside the workspace")
            .display()
            .to_string();
        assert!(
            test.contains(&lock),
            "scripts/test installs {lock} (with npm ci)"
        );
    }
}

/// Codex CLI's npm package is a launcher; its binary is an optional dependency per
/// platform. The lock must hold the Linux x86-64 one (the machines' and CI's), with its
/// integrity hash, or `npm ci` installs a launcher without a binary.
#[test]
fn the_codex_lock_holds_the_linux_x64_binary() {
    let dir = workspace_root().join("tests/tools/codex");
    let lock: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("package-lock.json")).expect("the codex lock"),
    )
    .expect("the codex lock is JSON");
    let packages = &lock["packages"];
    let launcher = &packages["node_modules/@openai/codex"];
    let version = launcher["version"]
        .as_str()
        .expect("@openai/codex's version");
    assert!(
        launcher["optionalDependencies"]["@openai/codex-linux-x64"]
            .as_str()
            .is_some_and(|spec| spec.ends_with(&format!("{version}-linux-x64"))),
        "@openai/codex {version} names its linux-x64 binary package: {launcher}"
    );
    let binary = &packages["node_modules/@openai/codex-linux-x64"];
    assert_eq!(
        binary["version"].as_str(),
        Some(format!("{version}-linux-x64").as_str()),
        "{binary}"
    );
    assert_eq!(binary["os"], serde_json::json!(["linux"]), "{binary}");
    assert_eq!(binary["cpu"], serde_json::json!(["x64"]), "{binary}");
    assert!(binary["integrity"].as_str().is_some(), "{binary}");
    assert!(
        binary["optional"].as_bool() == Some(true),
        "an optional dependency, so other platforms skip it: {binary}"
    );
}

/// The check itself catches what broke a fresh clone, and what else floats.
#[test]
fn floating_installs_are_caught() {
    let floating = [
        r#""$root/.venv/bin/pip" install --quiet 'moto[server]' openai anthropic prometheus-client"#,
        "pip install 'cfn-lint>=1,<2' cargo-lambda",
        r#"npm install --prefix "$dir" --silent @anthropic-ai/claude-code@2.1.197"#,
        "npx playwright install",
        "cargo install oha --locked",
        "cargo install oha --version 1 --locked",
        "apt-get install -y -t bookworm-backports chromium",
    ];
    for line in floating {
        assert_eq!(unpinned_installs(line).len(), 1, "{line}");
    }
    let pinned = [
        r#""$root/.venv/bin/pip" install --quiet --require-hashes -r "$root/tests/tools/requirements.txt""#,
        "(cd \"$dir\" && npm ci --silent)",
        "cargo install oha --version =1.16.0 --locked",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium",
        "# pip install anything, in a comment",
        r#"say "run pip install openai yourself""#,
    ];
    for line in pinned {
        assert!(unpinned_installs(line).is_empty(), "{line}");
    }
    // A continued line is read whole.
    assert_eq!(
        unpinned_installs("pip install --quiet \\\n  moto openai\n").len(),
        1
    );
    assert!(pinned_requirements("moto>=5\n").is_err());
    assert!(
        pinned_requirements("moto==5.2.5\n")
            .unwrap()
            .values()
            .all(|v| v.ends_with("(no hash)"))
    );
    let dir = std::env::temp_dir().join(format!("pinned-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"dependencies": {"x": "^1.2.0"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("package-lock.json"),
        r#"{"packages": {"": {}, "node_modules/x": {"version": "1.2.3"}}}"#,
    )
    .unwrap();
    assert_eq!(npm_lock_problems(&dir).len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
