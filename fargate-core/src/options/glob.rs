//! The `*` wildcard of allowlist patterns (task definitions, images, services, projects).

/// Whether `text` matches `pattern`, where `*` matches any run of characters (also none)
/// and every other character matches itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn stars_match_any_run() {
        assert!(glob_match("a*b*c", "axxbyyc") && !glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("*", "") && glob_match("ci-*", "ci-") && !glob_match("ci-*", "ci"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
    }

    /// Each row of the pattern table of `docs/configuration.md` holds for the matcher, and
    /// every pattern the manual, the README and `examples/fargate.toml` show in an
    /// `Allowed*` or `Projects` list is in that table: an example that matches nothing
    /// (`node:2?-*`, where `?` is a literal) cannot be documented.
    #[test]
    fn every_documented_pattern_matches_what_the_docs_claim() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let config = read("docs/configuration.md");
        let section = config
            .split("\n## Patterns\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/configuration.md has a `## Patterns` section");
        let mut table = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let [_, pattern, matches, misses, _] = cells[..] else {
                panic!("not a pattern row: {row}")
            };
            let pattern = ticked(pattern).remove(0);
            for text in ticked(matches) {
                assert!(
                    glob_match(&pattern, &text),
                    "{pattern:?} must match {text:?}"
                );
            }
            for text in ticked(misses) {
                assert!(
                    !glob_match(&pattern, &text),
                    "{pattern:?} must not match {text:?}"
                );
            }
            table.push(pattern);
        }
        assert!(table.len() >= 5, "{table:?}");
        let mut files = vec!["README.md".to_owned(), "examples/fargate.toml".to_owned()];
        for entry in std::fs::read_dir(root.join("docs")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".md") {
                files.push(format!("docs/{name}"));
            }
        }
        let mut shown = 0;
        for file in &files {
            for (n, line) in read(file).lines().enumerate() {
                let line = line.trim_start_matches([' ', '#']);
                let Some((key, list)) = line.split_once('=') else {
                    continue;
                };
                let key = key.trim();
                // AllowedCPUArchitectures lists exact names, not patterns.
                let patterns = key.starts_with("Allowed") || key == "Projects";
                if !patterns || key == "AllowedCPUArchitectures" {
                    continue;
                }
                let list = list.split(']').next().unwrap_or_default();
                for pattern in list.split('"').skip(1).step_by(2) {
                    shown += 1;
                    assert!(
                        table.iter().any(|p| p == pattern),
                        "{file}:{}: pattern {pattern:?} is not in the pattern table of docs/configuration.md",
                        n + 1
                    );
                }
            }
        }
        assert!(shown >= 8, "found only {shown} documented patterns");
    }
}
