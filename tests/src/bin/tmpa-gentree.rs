//! Generates a realistic TMPA tree for benchmarks and manual tests, deterministic from a
//! seed: N days × M usage events (about 200-300 bytes each), users with inboxes and acks,
//! chat sessions of realistic sizes (1 KiB-1 MiB by default), some temporaries.
//!
//! Files are written plainly (no fsync): this builds test data, it is not a backend.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;
use clap::Parser;

/// Generate a TMPA tree for benchmarks (deterministic from --seed).
#[derive(Parser, Debug, Clone)]
#[command(name = "tmpa-gentree")]
struct Args {
    /// Directory to create (must not exist, or be empty)
    #[arg(long)]
    root: PathBuf,
    /// Seed of the pseudo-random generator
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of days of usage events
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Loose events per day
    #[arg(long, default_value_t = 1000)]
    events_per_day: u64,
    /// Length of each event id in bytes (at least 18, at most 246): long ids make long
    /// file names, what a day's listing holds per file
    #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u64).range(18..=246))]
    id_bytes: u64,
    /// Usage events with only the fields an event must have (about 130 bytes besides the
    /// id), not the request's details a backend adds: many small files
    #[arg(long)]
    lean_events: bool,
    /// First day
    #[arg(long, default_value = "2026-01-01")]
    start_day: NaiveDate,
    /// Users (inboxes and chat histories)
    #[arg(long, default_value_t = 10)]
    users: u32,
    /// Notifications per user (every other one acked)
    #[arg(long, default_value_t = 10)]
    notifications_per_user: u32,
    /// Chat sessions per user
    #[arg(long, default_value_t = 4)]
    sessions_per_user: u32,
    /// Smallest session, bytes
    #[arg(long, default_value_t = 1024)]
    session_bytes_min: u64,
    /// Largest session, bytes
    #[arg(long, default_value_t = 1 << 20)]
    session_bytes_max: u64,
    /// Per mille of sessions made 60 days old (archivable)
    #[arg(long, default_value_t = 500)]
    old_sessions_per_mille: u64,
    /// Temporaries, spread over the data directories (half stale with a final file, a
    /// quarter orphans, a quarter fresh)
    #[arg(long, default_value_t = 10)]
    temporaries: u64,
    /// Writer threads
    #[arg(long, default_value_t = 2)]
    threads: u32,
}

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const MODELS: [&str; 4] = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "llama-3.1-70b",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    if a.root.exists() && fs::read_dir(&a.root)?.next().is_some() {
        return Err(format!("{} exists and is not empty", a.root.display()).into());
    }
    for d in ["notifications", "token_stats", "chat_history"] {
        fs::create_dir_all(a.root.join(d))?;
    }
    std::thread::scope(|s| -> Result<(), String> {
        let handles: Vec<_> = (0..a.threads.max(1))
            .map(|t| {
                let a = a.clone();
                s.spawn(move || -> Result<(), String> {
                    for day in (0..a.days).filter(|d| d % a.threads.max(1) == t) {
                        write_day(&a, day).map_err(|e| e.to_string())?;
                    }
                    for user in (0..a.users).filter(|u| u % a.threads.max(1) == t) {
                        write_user(&a, user).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| "writer thread panicked".to_owned())??;
        }
        Ok(())
    })?;
    write_temporaries(&a)?;
    Ok(())
}

fn write_day(a: &Args, day: u32) -> std::io::Result<()> {
    let date = a.start_day + chrono::Days::new(u64::from(day));
    let dir = a
        .root
        .join(format!("token_stats/{}", date.format("%Y-%m-%d")));
    fs::create_dir_all(&dir)?;
    let mut rng = Rng(a.seed ^ (u64::from(day) << 32) ^ 0xD1);
    let mut buf = Vec::with_capacity(512);
    for i in 0..a.events_per_day {
        let mut id = format!("{:04}{:08x}{:06}", day, rng.next() as u32, i);
        while (id.len() as u64) < a.id_bytes {
            id.push_str(&format!("{:016x}", rng.next()));
        }
        id.truncate(a.id_bytes as usize);
        let secs = rng.below(86_400);
        buf.clear();
        write!(
            buf,
            r#"{{"id":"{id}","ts":"{}T{:02}:{:02}:{:02}.{:03}Z","user_id":"user{:05}","model":"{}","prompt_tokens":{},"completion_tokens":{},"request_id":"req-{:016x}","latency_ms":{},"endpoint":"/v1/chat/completions","status":200,"client":{{"ip":"10.{}.{}.{}","ua":"backend/2.3.1"}}}}"#,
            date.format("%Y-%m-%d"),
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            rng.below(1000),
            rng.below(u64::from(a.users.max(1))),
            MODELS[rng.below(MODELS.len() as u64) as usize],
            rng.below(8000),
            rng.below(2000),
            rng.next(),
            20 + rng.below(20_000),
            rng.below(256),
            rng.below(256),
            rng.below(256),
        )?;
        if a.lean_events {
            // The same event up to its required fields.
            let end = buf
                .windows(14)
                .position(|w| w == br#","request_id":"#)
                .expect("written above");
            buf.truncate(end);
            buf.push(b'}');
        }
        fs::write(dir.join(format!("evt_{id}.json")), &buf)?;
    }
    Ok(())
}

fn write_user(a: &Args, user: u32) -> std::io::Result<()> {
    let mut rng = Rng(a.seed ^ (u64::from(user) << 20) ^ 0xA5);
    let u = format!("user{user:05}");
    let inbox = a.root.join(format!("notifications/{u}/inbox"));
    let ack = a.root.join(format!("notifications/{u}/ack"));
    fs::create_dir_all(&inbox)?;
    fs::create_dir_all(&ack)?;
    for n in 0..a.notifications_per_user {
        let id = format!("ntf_{:08x}{n:04}", rng.next() as u32);
        fs::write(
            inbox.join(format!("{id}.json")),
            format!(
                r#"{{"title":"Weekly report {n}","body":"Your usage report is ready.","created_at":"2026-01-01T00:00:00Z"}}"#
            ),
        )?;
        if n % 2 == 0 {
            fs::write(
                ack.join(format!("{id}.ack")),
                r#"{"acked_at":"2026-01-02T00:00:00Z"}"#,
            )?;
        }
    }
    let sessions = a.root.join(format!("chat_history/{u}/sessions"));
    let profile = a.root.join(format!("chat_history/{u}/profile"));
    fs::create_dir_all(&sessions)?;
    fs::create_dir_all(&profile)?;
    fs::write(
        profile.join("settings.json"),
        r#"{"lang":"en","theme":"dark"}"#,
    )?;
    for s in 0..a.sessions_per_user {
        let path = sessions.join(format!("s{:08x}{s:03}.json", rng.next() as u32));
        let span = a
            .session_bytes_max
            .saturating_sub(a.session_bytes_min)
            .max(1);
        // Log-uniform sizes: most sessions are small, a few are large.
        let size = (a.session_bytes_min as f64
            * ((span as f64).ln() * rng.below(1000) as f64 / 1000.0).exp())
            as u64;
        write_session(
            &path,
            size.clamp(a.session_bytes_min, a.session_bytes_max),
            &mut rng,
        )?;
        if rng.below(1000) < a.old_sessions_per_mille {
            set_age(&path, Duration::from_secs(60 * 86_400))?;
        }
    }
    Ok(())
}

/// A chat session of about `size` bytes: realistic, compressible text.
fn write_session(path: &Path, size: u64, rng: &mut Rng) -> std::io::Result<()> {
    const WORDS: [&str; 16] = [
        "the", "model", "answer", "token", "please", "explain", "why", "data", "file", "rust",
        "server", "request", "latency", "because", "summary", "archive",
    ];
    let mut out = Vec::with_capacity(size as usize + 256);
    out.extend_from_slice(b"{\"messages\":[");
    let mut first = true;
    while (out.len() as u64) < size {
        if !first {
            out.push(b',');
        }
        first = false;
        let role = if rng.below(2) == 0 {
            "user"
        } else {
            "assistant"
        };
        write!(out, r#"{{"role":"{role}","text":""#)?;
        for _ in 0..(5 + rng.below(60)) {
            out.extend_from_slice(WORDS[rng.below(16) as usize].as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
    fs::write(path, out)
}

fn write_temporaries(a: &Args) -> std::io::Result<()> {
    let mut rng = Rng(a.seed ^ 0x7E);
    let days: Vec<PathBuf> = fs::read_dir(a.root.join("token_stats"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    for i in 0..a.temporaries {
        let dir = match (i % 3, days.is_empty() || a.users == 0) {
            (0, false) | (_, true) if !days.is_empty() => {
                days[rng.below(days.len() as u64) as usize].clone()
            }
            (1, _) if a.users > 0 => a.root.join(format!(
                "notifications/user{:05}/inbox",
                rng.below(u64::from(a.users))
            )),
            _ if a.users > 0 => a.root.join(format!(
                "chat_history/user{:05}/sessions",
                rng.below(u64::from(a.users))
            )),
            _ => continue,
        };
        let kind = i % 4;
        let final_name = format!("tmpfile{i:06}.json");
        if kind < 2 {
            fs::write(dir.join(&final_name), b"{}")?;
        }
        let tmp = dir.join(format!("{final_name}.tmp.{}", 1000 + i));
        fs::write(&tmp, b"{\"partial\":")?;
        if kind != 3 {
            set_age(&tmp, Duration::from_secs(3 * 86_400))?;
        }
    }
    Ok(())
}

fn set_age(p: &Path, age: Duration) -> std::io::Result<()> {
    fs::File::options()
        .write(true)
        .open(p)?
        .set_modified(SystemTime::now() - age)
}
