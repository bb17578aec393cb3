//! Stage scripts and shell quoting as gitlab-runner writes them.

use std::fmt::Write as _;

/// A stage script as gitlab-runner's bash shell writes it (runner 17.4+).
pub fn runner_script(body: &str) -> String {
    format!(
        "#!/usr/bin/env bash\n\ntrap 'exit 1' TERM\n\nset -eo pipefail\nset +o noclobber\n( trap 'exit 1' TERM; eval {} ) < /dev/null\nexit 0\n",
        ansi_c_quote(body)
    )
}

/// Bash `$'...'` quoting, as the runner's `ShellEscape` does.
pub fn ansi_c_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
