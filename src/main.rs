//! The `crm` binary: everything lives in the library; see [`crm::cli`].

fn main() -> std::process::ExitCode {
    crm::cli::main()
}
