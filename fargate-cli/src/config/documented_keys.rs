//! The key table of the configuration reference (`docs/configuration.md`), the reader and
//! the commented sample (`examples/fargate.toml`) name the same keys: a key added to one of
//! them only fails here.
//!
//! The table is read row by row (`Key`, `[Table] Key`, `[[Table]] Key`, or `[Table]` for a
//! table of free keys such as tags). Each row is fed to the reader alone, which must take it
//! without an "unknown key" warning; every key the reader looked for while reading all of
//! them (a new table included, as a key of its parent) must be a row or a table of rows. The
//! sample's keys, set or commented out (`# Key = ...` under a `[Table]` or `# [Table]` line),
//! must be the table's rows, every row included.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::reader::Reader;
use super::sections::read_document;

/// A key as `(table, key)`, lower case (keys are case-insensitive); `table` is dotted
/// (`fargate.taskshape`), empty at the top level; `key` is `None` for a table of free keys.
type Key = (String, Option<String>);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `Key`, `[Table] Key`, `[[Table]] Key` or `[Table]`.
fn parse_label(label: &str) -> Option<Key> {
    let label = label.trim();
    let Some(rest) = label.strip_prefix('[') else {
        return is_name(label).then(|| (String::new(), Some(label.to_ascii_lowercase())));
    };
    let rest = rest.strip_prefix('[').unwrap_or(rest);
    let (table, after) = rest.split_once(']')?;
    let key = after.trim_start_matches(']').trim();
    if !table.split('.').all(is_name) {
        return None;
    }
    let table = table.to_ascii_lowercase();
    match key {
        "" => Some((table, None)),
        k if is_name(k) => Some((table, Some(k.to_ascii_lowercase()))),
        _ => None,
    }
}

fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn shown((table, key): &Key) -> String {
    match (table.is_empty(), key) {
        (true, Some(k)) => k.clone(),
        (false, Some(k)) => format!("[{table}] {k}"),
        (_, None) => format!("[{table}]"),
    }
}

/// The rows of the one key table (the table whose header starts `| Key | Type | Default |`)
/// of `docs/configuration.md`, as written.
fn documented() -> Vec<(String, Key)> {
    let text = read("docs/configuration.md");
    let mut lines = text.lines().skip_while(|l| !is_key_table_header(l));
    assert!(
        lines.next().is_some(),
        "docs/configuration.md has no `| Key | Type | Default | ...` table"
    );
    let mut rows = Vec::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cell = line.trim_start_matches('|').split('|').next().unwrap_or("");
        let label = cell.trim().trim_matches('`');
        let key = parse_label(label)
            .unwrap_or_else(|| panic!("docs/configuration.md: cannot read the key {cell:?}"));
        rows.push((label.to_owned(), key));
    }
    rows
}

fn is_key_table_header(line: &str) -> bool {
    line.replace(' ', "").starts_with("|Key|Type|Default|")
}

/// Reads `text` as `fargate.toml`: its unknown-key warnings and the keys looked for.
fn read_with_reader(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let doc = DeTable::parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    let mut reader = Reader::new(text, "fargate.toml");
    read_document(&mut reader, doc.get_ref());
    (reader.warnings, reader.asked)
}

/// A document setting `key` (its table written as an array item for `[[Table]] Key`).
fn document_of(label: &str, (table, key): &Key) -> String {
    let array = label.starts_with("[[");
    let header = match (table.is_empty(), array) {
        (true, _) => String::new(),
        (false, true) => format!("[[{table}]]\n"),
        (false, false) => format!("[{table}]\n"),
    };
    let key = key.as_deref().unwrap_or("any-free-key");
    format!("{header}{key} = \"x\"\n")
}

/// Whether `name` (dotted, lower case) is a table some row belongs to.
fn is_table(rows: &BTreeSet<Key>, name: &str) -> bool {
    rows.iter()
        .any(|(table, _)| table == name || table.starts_with(&format!("{name}.")))
}

#[test]
fn the_key_table_and_the_reader_name_the_same_keys() {
    let rows = documented();
    assert!(rows.len() > 50, "only {} rows read", rows.len());
    let keys: BTreeSet<Key> = rows.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(keys.len(), rows.len(), "a key is listed twice");
    let mut asked = BTreeSet::new();
    let mut problems = Vec::new();
    for (label, key) in &rows {
        let (warnings, seen) = read_with_reader(&document_of(label, key));
        if !warnings.is_empty() {
            problems.push(format!(
                "`{label}` is in the table but the reader does not know it: {warnings:?}"
            ));
        }
        asked.extend(seen);
    }
    for label in &asked {
        let key = parse_label(label).unwrap_or_else(|| panic!("reader label {label:?}"));
        let as_table = match &key {
            (table, Some(k)) if table.is_empty() => k.clone(),
            (table, Some(k)) => format!("{table}.{k}"),
            (table, None) => table.clone(),
        };
        if !keys.contains(&key) && !is_table(&keys, &as_table) {
            problems.push(format!(
                "the reader knows `{label}`, which the key table of docs/configuration.md does not list"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The keys of the sample, set or commented out, with the line they are on.
fn sample_keys(text: &str, free_tables: &BTreeSet<String>) -> Vec<(usize, Key)> {
    let mut table = String::new();
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start().trim_start_matches('#').trim();
        let bare = line.split(" #").next().unwrap_or("").trim();
        if let Some(name) = bare
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .map(|r| r.trim_start_matches('[').trim_end_matches(']'))
            .filter(|r| r.split('.').all(is_name))
        {
            table = name.to_ascii_lowercase();
            if free_tables.contains(&table) {
                keys.push((n + 1, (table.clone(), None)));
            }
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if is_name(key) && !free_tables.contains(&table) {
            keys.push((n + 1, (table.clone(), Some(key.to_ascii_lowercase()))));
        }
    }
    keys
}

#[test]
fn the_sample_file_shows_every_key_of_the_table_and_no_other() {
    let rows: BTreeSet<Key> = documented().into_iter().map(|(_, k)| k).collect();
    let free: BTreeSet<String> = rows
        .iter()
        .filter(|(_, k)| k.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    let sample = sample_keys(&read("examples/fargate.toml"), &free);
    let mut problems = Vec::new();
    for (line, key) in &sample {
        if !rows.contains(key) {
            problems.push(format!(
                "examples/fargate.toml:{line}: `{}` is not in the key table of docs/configuration.md",
                shown(key)
            ));
        }
    }
    let in_sample: BTreeSet<&Key> = sample.iter().map(|(_, k)| k).collect();
    for key in &rows {
        if !in_sample.contains(key) {
            problems.push(format!(
                "`{}` is in the key table but not in examples/fargate.toml (set, or commented out as `# Key = ...`)",
                shown(key)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_key_table_is_written_once() {
    let mut files = vec![repo().join("README.md")];
    for dir in ["docs", "fargate-cli/src"] {
        let mut stack = vec![repo().join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "md" || e == "rs") {
                    files.push(path);
                }
            }
        }
    }
    let mut tables = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            if is_key_table_header(line.trim_start_matches("//!").trim()) {
                tables.push(path.display().to_string());
            }
        }
    }
    assert_eq!(tables.len(), 1, "key tables in {tables:?}");
    assert!(tables[0].ends_with("docs/configuration.md"), "{tables:?}");
}

#[test]
fn the_readme_configuration_loads_without_problems_or_warnings() {
    let readme = read("README.md");
    let block = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split_once("\n```").map(|(b, _)| b))
        .find(|b| b.lines().any(|l| l.trim() == "[Fargate]"))
        .expect("README.md shows a fargate.toml");
    let loaded = super::parse(block, "README.md").unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn every_setting_a_hint_names_is_a_documented_key() {
    let rows: BTreeSet<Key> = documented().into_iter().map(|(_, k)| k).collect();
    for setting in fargate_core::Setting::ALL {
        let key = super::setting_keys::file_key(setting);
        let parsed = parse_label(key).unwrap_or_else(|| panic!("{setting:?}: {key:?} is no key"));
        assert!(
            rows.contains(&parsed),
            "{setting:?} is shown as {key}, which docs/configuration.md does not list"
        );
    }
}
