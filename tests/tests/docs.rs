//! The documentation stays navigable: the README is short and links every page of
//! `docs/`, every relative link in the README and the docs leads to a file that exists,
//! and the layout page names every module of `switchboard-core`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use switchboard_tests::moto::workspace_root;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn doc_pages(root: &Path) -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// The targets of `[text](target)` links, without their `#anchor`.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].trim();
        let path = target.split('#').next().unwrap_or_default();
        if !path.is_empty() && !path.contains("://") && !path.starts_with("mailto:") {
            links.push(path.to_string());
        }
        rest = &rest[end..];
    }
    links
}

#[test]
fn the_readme_is_short_and_maps_every_doc_page() {
    let root = workspace_root();
    let readme = read(&root.join("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines (at most 300)");
    for page in doc_pages(&root) {
        let name = page.file_name().unwrap().to_string_lossy();
        if name == "README.md" {
            continue;
        }
        assert!(
            readme.contains(&format!("](docs/{name}")),
            "README.md does not link docs/{name}"
        );
    }
    for command in [
        "cargo run --release -p switchboard -- serve",
        "./scripts/test",
    ] {
        assert!(readme.contains(command), "README.md lacks `{command}`");
    }
}

#[test]
fn every_relative_link_leads_to_a_file() {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    files.extend(doc_pages(&root));
    let mut broken = Vec::new();
    for file in &files {
        let dir = file.parent().unwrap();
        for link in relative_links(&read(file)) {
            if !dir.join(&link).exists() {
                broken.push(format!("{}: {link}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn the_layout_page_names_every_core_module() {
    let root = workspace_root();
    let layout = read(&root.join("docs/layout.md"));
    let src = root.join("shared/src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" {
            continue;
        }
        let shown = if path.is_dir() {
            format!("{name}/")
        } else {
            format!("{name}.rs")
        };
        if !layout.contains(&shown) {
            missing.push(shown);
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "docs/layout.md does not name: {missing:?}"
    );
}
