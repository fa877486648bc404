//! Records events from several threads of one process at once, the way a backend's
//! request threads do, and prints `ok {id}` the instant each `record_event` returned `Ok`
//! (stdout flushed line by line): what a crash test holds the library to.
//!
//! `tmpa-recorders ROOT THREADS EVENTS_PER_THREAD [PREFIX]`: thread `t` records
//! `{PREFIX}t{t}-{i}` for each `i`; a failed call prints `err {id} {error}` and ends that
//! thread. Exits 0 when every call succeeded, 1 otherwise.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;

use tmpa_core::{Event, Root};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(root), Some(threads), Some(n)) = (
        args.first(),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
        args.get(2).and_then(|s| s.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: tmpa-recorders ROOT THREADS EVENTS_PER_THREAD [PREFIX]");
        return ExitCode::from(2);
    };
    let prefix = args.get(3).cloned().unwrap_or_default();
    let root = match Root::open(root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tmpa-recorders: {}", e.chain());
            return ExitCode::FAILURE;
        }
    };
    let out = Mutex::new(std::io::stdout());
    let say = |line: String| {
        let mut o = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    let failed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (root, say, prefix) = (&root, &say, &prefix);
                s.spawn(move || {
                    for i in 0..n {
                        let id = format!("{prefix}t{t}-{i}");
                        let e = Event::from_value(serde_json::json!({
                            "id": id, "ts": "2026-11-01T10:00:00Z", "user_id": format!("u{t}"),
                            "model": "m", "prompt_tokens": i, "completion_tokens": t,
                        }))
                        .expect("a valid event");
                        match root.record_event(&e) {
                            Ok(_) => say(format!("ok {id}")),
                            Err(err) => {
                                say(format!("err {id} {}", err.chain()));
                                return true;
                            }
                        }
                    }
                    false
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(true))
            .fold(false, |a, b| a | b)
    });
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
