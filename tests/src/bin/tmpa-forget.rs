//! Forgets data through the library as a backend process would (with the store's
//! environment): `tmpa-forget ROOT user USER`, `tmpa-forget ROOT session USER ID`,
//! `tmpa-forget ROOT notification USER ID`, optionally followed by `--lock-wait-ms N`.
//! Prints the report as JSON; exit 1 on an error (its chain on stderr), 3 when a
//! maintenance lock stayed held. For tests that kill it, trace it or give it the S3
//! environment (tests/tests/forget.rs).

use std::process::ExitCode;
use std::time::Duration;

use tmpa_core::{Error, Forget, ForgetOptions, NotificationId, Root, SessionId, UserId};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, wait) = match args.iter().position(|a| a == "--lock-wait-ms") {
        Some(i) => {
            let ms = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(0);
            (args[..i].to_vec(), Duration::from_millis(ms))
        }
        None => (args, tmpa_core::LOCK_WAIT_DEFAULT),
    };
    match run(&args, &ForgetOptions::with_lock_wait(wait)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tmpa-forget: {}", e.chain());
            ExitCode::from(if matches!(e, Error::Locked { .. }) {
                3
            } else {
                1
            })
        }
    }
}

fn run(args: &[String], options: &ForgetOptions) -> tmpa_core::Result<String> {
    let usage = || {
        Error::InvalidEvent {
        reason: "usage: tmpa-forget ROOT (user USER | session USER ID | notification USER ID) [--lock-wait-ms N]".into(),
    }
    };
    let [root, what, user, rest @ ..] = args else {
        return Err(usage());
    };
    let root = Root::open(root)?;
    let user = UserId::new(user.as_str())?;
    let report = match (what.as_str(), rest) {
        ("user", []) => root.forget(Forget::User(&user), options)?,
        ("session", [id]) => {
            let s = SessionId::new(id.as_str())?;
            root.forget(Forget::Session(&user, &s), options)?
        }
        ("notification", [id]) => {
            let n = NotificationId::new(id.as_str())?;
            root.forget(Forget::Notification(&user, &n), options)?
        }
        _ => return Err(usage()),
    };
    Ok(serde_json::to_string(&report).expect("a report serializes"))
}
