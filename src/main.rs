//! The `crm` binary: everything lives in the library; see [`crm::cli`].

/// mimalloc hands freed memory back to the system (glibc's allocator keeps, for
/// instance, every Argon2 buffer of 19 MiB once its mmap threshold has risen) and
/// allocates the many small buffers of a batch faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    crm::cli::main()
}
