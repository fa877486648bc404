//! What a backend does to read old chat sessions, as a process of its own (so that the
//! object store's standard environment, `AWS_*`, can be set for it alone):
//!
//! ```text
//! tmpa-session ROOT USER            # one line per session: "{session} {live|archived|stored}"
//! tmpa-session ROOT USER SESSION    # the session's bytes on stdout
//! ```
//!
//! Exits 1 with the library's error (its whole chain) on stderr.

use std::io::Write;
use std::process::ExitCode;

use tmpa_core::{Root, SessionId, SessionLocation, UserId};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tmpa-session: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [root, user, rest @ ..] = args else {
        return Err("usage: tmpa-session ROOT USER [SESSION]".into());
    };
    let chain = |e: tmpa_core::Error| e.chain();
    let root = Root::open(root).map_err(chain)?;
    let user = UserId::new(user.as_str()).map_err(chain)?;
    let mut out = std::io::stdout().lock();
    match rest {
        [] => {
            for (s, loc) in root.list_sessions(&user).map_err(chain)? {
                let loc = match loc {
                    SessionLocation::Live => "live",
                    SessionLocation::Archived => "archived",
                    SessionLocation::Stored => "stored",
                    _ => "elsewhere",
                };
                writeln!(out, "{s} {loc}").map_err(|e| e.to_string())?;
            }
        }
        [session] => {
            let s = SessionId::new(session.as_str()).map_err(chain)?;
            let bytes = root.read_session(&user, &s).map_err(chain)?;
            out.write_all(&bytes).map_err(|e| e.to_string())?;
        }
        _ => return Err("usage: tmpa-session ROOT USER [SESSION]".into()),
    }
    Ok(())
}
