//! The `crm` binary: the command line ([`cli`]) over the library, the demo site
//! ([`demo`]) and the benchmark ([`bench`]).

mod bench;
mod cli;
mod demo;

/// mimalloc hands freed memory back to the system (glibc's allocator keeps, for
/// instance, every Argon2 buffer of 19 MiB once its mmap threshold has risen) and
/// allocates the many small buffers of a batch faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
