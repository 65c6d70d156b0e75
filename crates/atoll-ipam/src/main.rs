//! `atoll-ipam`: the CNI IPAM plugin of atoll.
//!
//! Reads the environment and stdin, hands them to [`atoll_cni::run`], prints
//! what it returns on stdout and exits with its code. All behaviour lives in
//! `atoll-cni`.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use atoll_cni::config::LATEST_VERSION;
use atoll_cni::{codes, run, CniError, Environ, Outcome};

fn main() -> ExitCode {
    let env = Environ::from_process();

    let outcome = match read_stdin() {
        Ok(stdin) => run(&env, &stdin),
        Err(err) => Outcome::failure(
            &CniError::new(codes::IO_FAILURE, "reading stdin failed", err.to_string()),
            &LATEST_VERSION.to_string(),
        ),
    };

    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(&outcome.stdout)
        .and_then(|()| stdout.flush())
    {
        // Nowhere left to report to but stderr.
        eprintln!("atoll-ipam: writing stdout failed: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1))
}

/// Reads all of stdin; a terminal counts as empty, so that running
/// `CNI_COMMAND=VERSION atoll-ipam` by hand does not wait for input.
fn read_stdin() -> std::io::Result<Vec<u8>> {
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    if !stdin.is_terminal() {
        stdin.read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}
