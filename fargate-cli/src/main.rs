//! The `fargate` binary: see the `fargate_cli` library for everything it does.

fn main() -> std::process::ExitCode {
    fargate_cli::main_impl(std::env::args_os())
}
