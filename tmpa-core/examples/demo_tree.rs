//! Builds a small, realistic demo tree for trying the programs:
//! `cargo run -p tmpa-core --example demo_tree -- DIR [--with-corrupt]`.
//!
//! Three past days and today of usage events, inboxes with and without acks, old and
//! recent chat sessions, a stale temporary next to its final file and an orphan
//! temporary. Written through the library, as a backend would. The tree is clean by
//! default, so a newcomer's first compaction ends with exit 0; `--with-corrupt` adds one
//! corrupt event file two days back (not through the library: a backend cannot write
//! one), to show how a program names a file it must keep (exit 1, README "Set-up").
//! DIR must be missing, empty, or an earlier demo tree (it is then rebuilt).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{Duration as Days, Local, SecondsFormat};
use serde_json::json;
use tmpa_core::{Event, NotificationId, Root, UserId};

const MARKER: &str = ".tmpa-demo";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (dir, with_corrupt) = parse_args(std::env::args().skip(1))?;
    prepare(&dir)?;
    for d in ["notifications", "token_stats", "chat_history"] {
        fs::create_dir_all(dir.join(d))?;
    }
    let root = Root::open(&dir)?;
    let users = ["alice", "bob", "carol"];
    let models = ["gpt-4o", "claude-3", "llama-3"];
    let today = Local::now();
    let mut n = 0u64;
    for back in 0..4 {
        let day = today - Days::days(back);
        for i in 0..(12 - back * 2) {
            n += 1;
            let ts = (day.date_naive().and_hms_opt(8, 0, 0).expect("valid time")
                + Days::minutes(37 * i))
            .and_utc()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
            let e = Event::from_value(json!({
                "id": format!("{:08}", n * 7919 % 100_000_000),
                "ts": ts,
                "user_id": users[(n % 3) as usize],
                "model": models[(n % 5 % 3) as usize],
                "prompt_tokens": 100 + n * 13 % 900,
                "completion_tokens": 20 + n * 29 % 400,
                "request_id": format!("req-{n}"),
                "latency_ms": 150 + n * 17 % 2000,
            }))?;
            root.record_event(&e)?;
        }
    }
    if with_corrupt {
        let corrupt_day = (today - Days::days(2)).format("%Y-%m-%d");
        fs::write(
            dir.join(format!("token_stats/{corrupt_day}/evt_broken.json")),
            b"{\"id\":\"broken\",\"ts\":",
        )?;
    }
    for (i, u) in users.iter().enumerate() {
        let user = UserId::new(*u)?;
        for k in 0..3 {
            let id = NotificationId::new(format!("{}", 100 + i * 10 + k))?;
            root.deliver(
                &user,
                &id,
                &json!({"title": format!("Notice {k}"), "body": "Your report is ready."}),
            )?;
            if k < i {
                root.ack(&user, &id)?;
            }
        }
        for (s, age_days) in [("s-old", 45u64), ("s-recent", 2)] {
            let rel = format!("chat_history/{u}/sessions/{s}.json");
            let body = json!({"session": s, "messages": [{"role": "user", "text": "hello"}, {"role": "assistant", "text": "hi"}]});
            let p = root.write_file(&rel, body.to_string().as_bytes())?;
            set_age(&p, Duration::from_secs(age_days * 86_400))?;
        }
        root.write_file(
            format!("chat_history/{u}/profile/settings.json"),
            b"{\"lang\":\"en\"}",
        )?;
    }
    let stale = dir.join("chat_history/alice/sessions/s-recent.json.tmp");
    fs::write(&stale, b"{\"session\":\"s-rec")?;
    set_age(&stale, Duration::from_secs(3 * 86_400))?;
    let orphan = dir.join("notifications/bob/inbox/ntf_999.json.tmp.4242");
    fs::write(&orphan, b"{\"title\":")?;
    set_age(&orphan, Duration::from_secs(3 * 86_400))?;
    let corrupt = if with_corrupt {
        ", one corrupt event file"
    } else {
        ""
    };
    println!("demo tree ready at {} ({n} events{corrupt})", dir.display());
    Ok(())
}

const USAGE: &str = "usage: demo_tree DIR [--with-corrupt]";

/// DIR and whether to add the corrupt event file; anything else is refused, so a
/// mistyped flag never becomes a directory name.
fn parse_args(
    args: impl Iterator<Item = String>,
) -> Result<(PathBuf, bool), Box<dyn std::error::Error>> {
    let mut dir = None;
    let mut with_corrupt = false;
    for a in args {
        match a.as_str() {
            "--with-corrupt" => with_corrupt = true,
            s if s.starts_with('-') => return Err(format!("unknown flag {s}; {USAGE}").into()),
            _ if dir.is_some() => return Err(USAGE.into()),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    Ok((dir.ok_or(USAGE)?, with_corrupt))
}

/// Refuses to touch a directory that is neither empty nor an earlier demo tree.
fn prepare(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if dir.join(MARKER).exists() {
        #[allow(
            clippy::disallowed_methods,
            reason = "a demo tree this example made (its marker says so) is remade whole"
        )]
        fs::remove_dir_all(dir)?;
    } else if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        return Err(format!(
            "{} is not empty and not a demo tree; refusing to touch it",
            dir.display()
        )
        .into());
    }
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join(MARKER),
        b"built by tmpa-core/examples/demo_tree.rs\n",
    )?;
    Ok(())
}

fn set_age(p: &Path, age: Duration) -> std::io::Result<()> {
    let t = SystemTime::now() - age;
    fs::File::options().write(true).open(p)?.set_modified(t)
}
