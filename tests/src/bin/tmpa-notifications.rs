//! What a backend does to read notifications, live or archived (locally or in the
//! object store), as a process of its own (so that the store's standard environment,
//! `AWS_*`, can be set for it alone):
//!
//! ```text
//! tmpa-notifications ROOT USER              # one line each: "{id} {live|archived|stored} {acked|unacked}"
//! tmpa-notifications ROOT USER --unacked    # the unacknowledged ids, one a line
//! tmpa-notifications ROOT USER ID           # the notification's bytes on stdout
//! tmpa-notifications ROOT USER ID --acked   # "true" or "false"
//! ```
//!
//! Exits 1 with the library's error (its whole chain) on stderr.

use std::io::Write;
use std::process::ExitCode;

use tmpa_core::{NotificationId, NotificationLocation, Root, UserId};

const USAGE: &str = "usage: tmpa-notifications ROOT USER [--unacked | ID [--acked]]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tmpa-notifications: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [root, user, rest @ ..] = args else {
        return Err(USAGE.into());
    };
    let chain = |e: tmpa_core::Error| e.chain();
    let io = |e: std::io::Error| e.to_string();
    let root = Root::open(root).map_err(chain)?;
    let user = UserId::new(user.as_str()).map_err(chain)?;
    let id = |s: &str| NotificationId::new(s).map_err(chain);
    let mut out = std::io::stdout().lock();
    match rest {
        [] => {
            for n in root.list_notifications(&user).map_err(chain)? {
                let loc = match n.location {
                    NotificationLocation::Live => "live",
                    NotificationLocation::Archived => "archived",
                    NotificationLocation::Stored => "stored",
                    _ => "elsewhere",
                };
                let acked = if n.acked { "acked" } else { "unacked" };
                writeln!(out, "{} {loc} {acked}", n.id).map_err(io)?;
            }
        }
        [flag] if flag == "--unacked" => {
            for n in root.unacked(&user).map_err(chain)? {
                writeln!(out, "{n}").map_err(io)?;
            }
        }
        [n] => {
            let bytes = root.read_notification(&user, &id(n)?).map_err(chain)?;
            out.write_all(&bytes).map_err(io)?;
        }
        [n, flag] if flag == "--acked" => {
            let acked = root.is_acked(&user, &id(n)?).map_err(chain)?;
            writeln!(out, "{acked}").map_err(io)?;
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}
