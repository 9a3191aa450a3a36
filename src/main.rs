//! The `pipeline` binary: parse arguments, run, print the error chain once, map it to an exit code.

fn main() -> std::process::ExitCode {
    pipeline::cli::main()
}
