//! Reading a damaged `_compacted.json` line by line ([`salvage_compacted`]): every event
//! whose line still matches its checksum is kept, every other line named.

use super::*;

/// The checksums of a `"crc32c"` table: eight lower-case hex digits an event.
pub(super) fn parse_table(table: &str) -> Option<Vec<u32>> {
    let b = table.as_bytes();
    if !b.len().is_multiple_of(8) || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    b.chunks(8)
        .map(|c| u32::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

/// What a line-by-line read of a damaged `_compacted.json` kept ([`salvage_compacted`]).
#[derive(Clone, Debug)]
pub struct Salvaged {
    /// The events that could be trusted: each line that matched its checksum (format 2),
    /// or that is a valid event (format 1, or format 2 whose table is damaged, which
    /// `problems` then says), each id once, in file order.
    pub events: Vec<Event>,
    /// A problem for each line that could not be used (with its line number), for events
    /// that were lost, and for what else is wrong with the file; never empty.
    pub problems: Vec<Problem>,
    /// Events the file held that were not kept, when its checksum table says how many.
    pub lost: Option<u64>,
}

/// One line of a `_compacted.json` read as an event.
pub(super) struct Candidate {
    line: u64,
    raw: RawEvent,
    crc: u32,
}

/// Reads the bytes of a `_compacted.json` of `day` that the strict reader refused
/// (`strict` says why), line by line: the canonical layout puts the head on line 1, one
/// event a line, and the end (with the checksum table of format 2) on the last line.
///
/// Each event line is parsed alone and, in format 2, matched with the next entries of the
/// checksum table (up to a few thousand ahead, so that lines lost or split by the damage
/// do not shift the rest): a line whose event matches is kept; a line that is not an event,
/// or whose event matches no entry, is a problem naming the line. Table entries no line
/// matched are events lost, and a last problem says how many. When the table itself is
/// damaged, every valid event is kept and a problem says they were read without
/// verification. A head that names another day or format is a problem of line 1, and the
/// lines are read all the same (a damaged digit of the day must not lose the day).
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::{CompactedWriter, salvage_compacted};
/// let day = "2026-11-01".parse().unwrap();
/// let ev = |id: &str, n: u32| format!(r#"{{"completion_tokens":1,"id":"{id}","model":"m","prompt_tokens":{n},"ts":"2026-11-01T10:00:00Z","user_id":"u"}}"#);
/// let mut w = CompactedWriter::start(Vec::new(), day).unwrap();
/// for (id, n) in [("a", 10), ("b", 20), ("c", 30)] {
///     w.event(ev(id, n).as_bytes()).unwrap();
/// }
/// let good = String::from_utf8(w.finish().unwrap()).unwrap();
/// let bad = good.replace(r#""prompt_tokens":20"#, r#""prompt_tokens":29"#); // one digit
/// let path = std::path::Path::new("_compacted.json");
/// let strict = tmpa_core::maintenance::parse_compacted(bad.as_bytes(), path, day).unwrap_err();
/// let s = salvage_compacted(bad.as_bytes(), path, day, strict);
/// let kept: Vec<_> = s.events.iter().map(|e| e.id().as_str()).collect();
/// assert_eq!(kept, ["a", "c"]);
/// let lines: Vec<_> = s.problems.iter().filter_map(|p| p.line).collect();
/// assert_eq!(lines, [3]); // the line of "b"
/// assert_eq!(s.lost, Some(1));
/// ```
pub fn salvage_compacted(bytes: &[u8], path: &Path, day: Day, strict: Error) -> Salvaged {
    let problem = |reason: String| Problem::new(path, ProblemKind::Corrupt, reason);
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    while lines.last().is_some_and(|l| l.trim_ascii().is_empty()) {
        lines.pop();
    }
    let mut s = Salvaged {
        events: Vec::new(),
        problems: Vec::new(),
        lost: None,
    };
    let head = |format: u32| format!("{{\"format\":{format},\"day\":\"{day}\",\"events\":[");
    let first = lines.first().copied().unwrap_or_default();
    let format = if first == head(COMPACTED_FORMAT).as_bytes() {
        COMPACTED_FORMAT
    } else if first == head(1).as_bytes() {
        1
    } else {
        s.problems.push(
            problem(format!(
                "not the head of a compacted file of {day}: damaged, another day's, or not \
                 written by tmpa"
            ))
            .at_line(1),
        );
        let last = lines.last().copied().unwrap_or_default();
        if last.windows(10).any(|w| w == b"\"crc32c\":\"") {
            COMPACTED_FORMAT
        } else {
            1
        }
    };
    // The end: `],"crc32c":"…"}` (format 2) or `]}` (format 1) on the last line.
    let last_no = lines.len();
    let (body_end, table) = match lines.last() {
        Some(l) if lines.len() > 1 && l.starts_with(b"]") => {
            let table = if format == COMPACTED_FORMAT {
                let t = l
                    .strip_prefix(b"],\"crc32c\":\"")
                    .and_then(|r| r.strip_suffix(b"\"}"))
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(parse_table);
                if t.is_none() {
                    s.problems.push(
                        problem(
                            "the checksum table is damaged: events read without verification"
                                .into(),
                        )
                        .at_line(last_no as u64),
                    );
                }
                t
            } else {
                if *l != b"]}" {
                    s.problems.push(
                        problem("not the end of a compacted file".into()).at_line(last_no as u64),
                    );
                }
                None
            };
            (lines.len() - 1, table)
        }
        _ => {
            s.problems.push(problem(
                "the file stops before its end (truncated or damaged)".into(),
            ));
            (lines.len(), None)
        }
    };
    let mut candidates = Vec::new();
    for (i, line) in lines.iter().enumerate().take(body_end).skip(1) {
        let no = i as u64 + 1;
        let text = line.strip_suffix(b",").unwrap_or(line);
        match RawEvent::from_json(text) {
            Ok(raw) => candidates.push(Candidate {
                line: no,
                crc: event_crc(raw.canonical()),
                raw,
            }),
            Err(e) => s
                .problems
                .push(problem(format!("not an event: {}", e.chain())).at_line(no)),
        }
    }
    let kept = match &table {
        Some(t) => {
            let (kept, lost, mut problems) = align(candidates, t, &problem);
            s.problems.append(&mut problems);
            if lost > 0 {
                s.problems.push(problem(format!(
                    "{lost} of the {} events its checksum table lists could not be read",
                    t.len()
                )));
            }
            s.lost = Some(lost);
            kept
        }
        None => candidates,
    };
    let mut seen = HashSet::with_capacity(kept.len());
    let mut last: Option<((i64, u32), String)> = None;
    for c in kept {
        let key = (c.raw.instant(), c.raw.id().as_str().to_owned());
        if !seen.insert(key.1.clone()) {
            s.problems.push(
                problem(format!(
                    "event id {} appears twice (the first is kept)",
                    key.1
                ))
                .at_line(c.line),
            );
            continue;
        }
        if last.as_ref().is_some_and(|l| *l > key) {
            s.problems
                .push(problem("event out of (ts, id) order (kept)".into()).at_line(c.line));
        }
        last = Some(key);
        s.events.push(Event::from_raw(c.raw));
    }
    if s.problems.is_empty() {
        // The strict reader saw something the lines do not show (e.g. an unknown field):
        // never a silent pass.
        s.problems.push(Problem::from_error(path, strict));
    }
    s.problems.sort();
    s
}

/// Matches event lines with a checksum table in order: the kept lines, the number of
/// table entries no line matched, and a problem for each line that matched none.
pub(super) fn align(
    candidates: Vec<Candidate>,
    table: &[u32],
    problem: &dyn Fn(String) -> Problem,
) -> (Vec<Candidate>, u64, Vec<Problem>) {
    let (mut kept, mut problems, mut next) = (Vec::new(), Vec::new(), 0usize);
    for c in candidates {
        let ahead = &table[next.min(table.len())..table.len().min(next + SALVAGE_WINDOW)];
        match ahead.iter().position(|&t| t == c.crc) {
            Some(k) => {
                next += k + 1;
                kept.push(c);
            }
            None => problems.push(
                problem(format!(
                    "fails its checksum (event {:?} as the line reads now)",
                    c.raw.id().as_str()
                ))
                .at_line(c.line),
            ),
        }
    }
    let lost = (table.len() - kept.len()) as u64;
    (kept, lost, problems)
}
