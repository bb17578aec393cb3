//! The documentation refers to no file that does not exist: every relative link of the
//! README, of `docs/*.md` and of each crate's README points to an existing file, and a link
//! to a heading (`file.md#heading`, `#heading`) to a heading of that file. The README also
//! keeps naming the test command that CI runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The README, `docs/*.md` and every `*/README.md` of the workspace.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && path.join("README.md").is_file() {
            files.push(path.join("README.md"));
        }
    }
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files.dedup();
    files
}

/// The lines of `text` outside fenced code blocks, with inline code removed.
fn prose(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop `code` spans (a link's text may hold one; its target never does).
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            } else {
                kept.push_str("code");
            }
        }
        out.push((n + 1, kept));
    }
    out
}

/// The targets of inline links `[text](target)` and of reference definitions `[x]: target`.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(end) => {
                out.push(
                    after[..end]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                );
                rest = &after[end..];
            }
            None => break,
        }
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some(end) = trimmed.find(']')
        && let Some(target) = trimmed[end..].strip_prefix("]: ")
    {
        out.push(target.split_whitespace().next().unwrap_or("").to_owned());
    }
    out
}

/// GitHub's anchors of the headings of a Markdown file.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#').trim();
        let base: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut slug = base.clone();
        let mut n = 1;
        while seen.contains(&slug) {
            slug = format!("{base}-{n}");
            n += 1;
        }
        seen.insert(slug);
    }
    seen
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// A rustdoc intra-doc link of a crate README (`fargate_core::TaskLauncher`).
fn is_rust_path(target: &str) -> bool {
    target.contains("::")
}

#[test]
fn every_relative_link_of_the_documentation_points_to_an_existing_file() {
    let root = repo();
    let docs = documents();
    assert!(docs.len() > 10, "{docs:?}");
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        let shown = doc.strip_prefix(&root).unwrap().display().to_string();
        for (line, prose_line) in prose(&text) {
            for target in links(&prose_line) {
                if target.is_empty() || is_external(&target) || is_rust_path(&target) {
                    continue;
                }
                checked += 1;
                let (file, fragment) = match target.split_once('#') {
                    Some((file, fragment)) => (file, Some(fragment)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    doc.clone()
                } else {
                    doc.parent().unwrap().join(file)
                };
                if !path.exists() {
                    problems.push(format!("{shown}:{line}: {target}: no such file"));
                    continue;
                }
                if let Some(fragment) = fragment {
                    let is_markdown = path.extension().is_some_and(|e| e == "md");
                    let target_text = std::fs::read_to_string(&path).unwrap_or_default();
                    if is_markdown && !anchors(&target_text).contains(fragment) {
                        problems.push(format!("{shown}:{line}: {target}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_file_refers_to_a_protocol_document_that_does_not_exist() {
    // The documents above, and the sources' comments, once cited a protocol document that
    // was never in the repository.
    // Spelt in two halves so that this file does not find itself.
    let missing = concat!("PROTOCOL", ".md");
    let root = repo();
    if root.join(missing).exists() {
        return;
    }
    let mut hits = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".md") || name.ends_with(".toml") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.contains(missing) {
                    hits.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(hits.is_empty(), "{hits:?}");
}

#[test]
fn the_readme_names_the_test_command_that_ci_runs() {
    let root = repo();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(ci.contains("exec scripts/test"), "{ci}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("The test command is `scripts/test`"),
        "README.md must name the test command"
    );
    assert!(root.join("scripts/test").is_file());
}
