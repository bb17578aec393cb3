//! Finding the Python interpreter that has moto.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{MOTO_INSTALL, MOTO_VERSION};

/// The Python interpreter that has moto: `FARGATE_MOTO_PYTHON`, else `python3`.
///
/// # Panics
/// When it cannot `import moto` or its moto is not [`MOTO_VERSION`], with the install
/// command.
pub fn moto_python() -> PathBuf {
    // The version, not only the import: other moto versions answer differently (5.2.1 sends a
    // container's `cpu` as a number, which the SDK refuses with an error that names nothing).
    let check = format!(
        "import moto.server, sys; sys.exit(0 if moto.__version__ == '{MOTO_VERSION}' else 3)"
    );
    let status = |python: &Path| {
        Command::new(python)
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .and_then(|s| s.code())
    };
    let explain = |python: &Path, code: Option<i32>| match code {
        Some(3) => format!(
            "{} has another moto than {MOTO_VERSION}, which the fixture is written for; \
             install it with `{MOTO_INSTALL}` (or point FARGATE_MOTO_PYTHON at an interpreter \
             that has it)",
            python.display()
        ),
        _ => format!(
            "{} cannot `import moto.server`; install it with `{MOTO_INSTALL}` (or point \
             FARGATE_MOTO_PYTHON at an interpreter that has it)",
            python.display()
        ),
    };
    let python = std::env::var_os("FARGATE_MOTO_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    match status(&python) {
        Some(0) => python,
        code => panic!("{}", explain(&python, code)),
    }
}
