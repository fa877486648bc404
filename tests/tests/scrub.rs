//! `tmpa-patrol --scrub`: compacted days and archives read against their checksums, a
//! bounded share per patrol, resumed from `.tmpa/patrol/scrub.json`; a damaged file makes
//! the `scrub` check critical (and its metric non-zero) until it is repaired.

use std::fs;
use std::io::Write;

use serde_json::Value;
use tmpa_tests::Tree;

fn scrub_check(doc: &Value) -> &Value {
    doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "scrub")
        .expect("a scrub check")
}

fn cursor(t: &Tree) -> String {
    let v: Value = serde_json::from_slice(
        &fs::read(t.root().join(".tmpa/patrol/scrub.json")).expect("scrub.json"),
    )
    .expect("json");
    v["cursor"].as_str().expect("cursor").to_owned()
}

/// Three compacted days and a session archive: a small budget reads one file per patrol
/// and goes on where the last one stopped; a flipped byte in a compacted day is found,
/// named with its damaged line, critical (exit 2) and in the metrics, until it is repaired.
#[test]
fn scrub_reads_in_bounded_steps_and_names_damage() {
    let t = Tree::new();
    for day in ["2026-11-01", "2026-11-02", "2026-11-03"] {
        for i in 0..3 {
            t.event(day, &format!("{day}-{i}"), "u", 6225 + i, 1);
        }
    }
    assert_eq!(t.run("tmpa-compact", &["--before", "2026-11-04"]).code, 0);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"{\"messages\":[]}").expect("gzip");
        e.finish().expect("gzip")
    };
    t.file("chat_history/u1/archive/s1.json.gz", &gz);

    // One file per patrol (a budget of one byte): the cursor walks the files in order.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = t.run("tmpa-patrol", &["--json", "--scrub", "--scrub-bytes", "1"]);
        let doc = r.json();
        let c = scrub_check(&doc);
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(doc["scrub"]["files_checked"], 1, "{doc}");
        seen.push(cursor(&t));
    }
    assert_eq!(
        seen,
        [
            "chat_history/u1/archive/s1.json.gz",
            "token_stats/2026-11-01/_compacted.json",
            "token_stats/2026-11-02/_compacted.json",
            "", // the pass completed: the next starts from the first file
        ]
    );

    // One digit of a count changed on the disk.
    let path = t.root().join("token_stats/2026-11-02/_compacted.json");
    let good = fs::read_to_string(&path).expect("compacted");
    fs::write(
        &path,
        good.replacen("\"prompt_tokens\":6226", "\"prompt_tokens\":6236", 1),
    )
    .expect("write");
    let prom = t.root().join("../scrub.prom");
    let r = t.run(
        "tmpa-patrol",
        &[
            "--json",
            "--scrub",
            "--prometheus",
            prom.to_str().expect("utf-8"),
        ],
    );
    let doc = r.json();
    let c = scrub_check(&doc);
    assert_eq!(c["status"], "critical", "{c}");
    assert_eq!(c["value"], 1);
    let finding = c["findings"][0].as_str().expect("a finding");
    assert!(
        finding.starts_with("token_stats/2026-11-02/_compacted.json:")
            && finding.contains("checksum")
            && finding.contains("damaged lines: 3"),
        "{finding}"
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    let metrics = fs::read_to_string(&prom).expect("metrics");
    assert!(metrics.contains("tmpa_scrub_damaged_files 1"), "{metrics}");
    assert!(
        metrics.contains("tmpa_check_status{check=\"scrub\"} 2"),
        "{metrics}"
    );

    // Still critical on the next patrols, until a pass reads it intact again.
    fs::write(&path, &good).expect("repair");
    let r = t.run("tmpa-patrol", &["--json", "--scrub"]);
    assert_eq!(scrub_check(&r.json())["status"], "ok", "{}", r.stdout);
    let _ = fs::remove_file(prom);
}

/// Without `--scrub` nothing is read against checksums and there is no `scrub` check.
#[test]
fn no_scrub_without_the_flag() {
    let t = Tree::new();
    let doc = t.run("tmpa-patrol", &["--json"]).json();
    assert!(
        doc["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .all(|c| c["name"] != "scrub")
    );
    assert!(!t.root().join(".tmpa/patrol/scrub.json").exists());
}
