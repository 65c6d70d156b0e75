//! `atoll`: parses the command line and hands over to the library.

use clap::Parser;

// The agent allocates small strings and maps on every request; mimalloc
// serves them with less contention between its threads than the system's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = atoll::cli::Cli::parse();
    match atoll::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
