//! Exercises every call of the library a backend makes, on a fresh root, and checks each
//! result: a test driver for environments the test process itself cannot be put in (a
//! mount namespace without `/proc`, say). Prints one line per call; exits 1 on the first
//! failure, naming it.

use std::path::PathBuf;
use std::process::ExitCode;

use tmpa_core::{Day, Event, InboxQuery, NotificationId, Root, SessionId, SessionLocation, UserId};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: tmpa-libcalls DIR (an empty directory)");
        return ExitCode::from(2);
    };
    match run(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tmpa-libcalls: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step<T>(what: &str, r: tmpa_core::Result<T>) -> Result<T, String> {
    match r {
        Ok(v) => {
            println!("ok {what}");
            Ok(v)
        }
        Err(e) => Err(format!("{what}: {}", e.chain())),
    }
}

fn check(what: &str, ok: bool) -> Result<(), String> {
    if ok {
        println!("ok {what}");
        Ok(())
    } else {
        Err(format!("{what}: wrong result"))
    }
}

fn run(dir: &std::path::Path) -> Result<(), String> {
    step("create", Root::create(dir))?;
    let root = step("open", Root::open(dir))?;
    let root = step("reopen", root.reopen())?;
    let day: Day = "2026-11-23"
        .parse()
        .map_err(|e: tmpa_core::Error| e.to_string())?;
    let long_id = "i".repeat(240);
    let mut ids = vec![long_id.clone()];
    for (i, id) in ["a1", "a2"].iter().enumerate() {
        ids.push((*id).to_owned());
        let _ = i;
    }
    for id in &ids {
        let e = step(
            "event",
            Event::from_value(serde_json::json!({"id": id, "ts": "2026-11-23T10:00:00Z",
                "user_id": "u1", "model": "m", "prompt_tokens": 3, "completion_tokens": 4})),
        )?;
        step("record_event", root.record_event(&e))?;
        step("record_event again", root.record_event(&e))?;
    }
    let read = step("read_day", root.read_day(day))?;
    check(
        "read_day events",
        read.events.len() == 3 && read.problems.is_empty(),
    )?;
    let s = step("summary", root.summary(day))?;
    check(
        "summary totals",
        s.summary.totals.total_tokens == 21 && s.rebuilt,
    )?;
    let s = step("summary cached", root.summary(day))?;
    check("summary cache", !s.rebuilt)?;
    let u = UserId::new("u1").map_err(|e| e.to_string())?;
    let n = NotificationId::new("42").map_err(|e| e.to_string())?;
    step(
        "deliver",
        root.deliver(&u, &n, &serde_json::json!({"t": 1})),
    )?;
    check(
        "unacked",
        step("unacked", root.unacked(&u))? == vec![n.clone()],
    )?;
    check(
        "inbox",
        step("inbox", root.inbox(&u, &InboxQuery::default()))?.len() == 1,
    )?;
    step("ack", root.ack(&u, &n))?;
    check(
        "ack of an id never delivered",
        root.ack(&u, &NotificationId::new("none").map_err(|e| e.to_string())?)
            .is_err_and(|e| e.io_kind() == std::io::ErrorKind::NotFound),
    )?;
    check("is_acked", step("is_acked", root.is_acked(&u, &n))?)?;
    let sid = SessionId::new("s1").map_err(|e| e.to_string())?;
    step("write_session", root.write_session(&u, &sid, b"{\"m\":[]}"))?;
    check(
        "read_session",
        step("read_session", root.read_session(&u, &sid))? == b"{\"m\":[]}",
    )?;
    check(
        "list_sessions",
        step("list_sessions", root.list_sessions(&u))? == vec![(sid, SessionLocation::Live)],
    )?;
    step(
        "write_file",
        root.write_file("chat_history/u1/profile/p.json", b"{}"),
    )?;
    step("write", tmpa_core::write(dir.join("outside.json"), b"{}"))?;
    Ok(())
}
