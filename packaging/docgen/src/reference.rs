//! docs/REFERENCE.md: every program's flags and exit statuses in one Markdown page,
//! generated from the same clap definitions and exit tables as the man pages, so that
//! the reference a reader finds in the repository cannot say other than the programs.
//! `cargo run -p tmpa-docgen -- --reference docs/REFERENCE.md` writes it; a test fails
//! while the committed page differs from what this renders.

use std::fmt::Write as _;

use clap::{Arg, ArgAction, Command};

use crate::{Kind, PATROL_EXIT_NOTE, PROGRAMS, Program, exit_statuses};

/// Where the page lives, relative to the workspace.
pub const REFERENCE_PATH: &str = "docs/REFERENCE.md";

/// The whole page.
pub fn reference() -> String {
    let mut s = String::new();
    s.push_str(
        "# Reference: the programs' flags and exit statuses\n\n\
         Generated from the programs' own flag definitions (clap) and exit tables by \
         `cargo run -p tmpa-docgen -- --reference docs/REFERENCE.md`; do not edit by hand \
         (a test fails when this page and the programs disagree). The same text is in each \
         program's `--help` and man page. What the programs do, step by step, is in \
         [OPERATIONS.md](OPERATIONS.md); the files they read and write are in \
         [FORMAT.md](FORMAT.md).\n\n",
    );
    for p in &PROGRAMS {
        let _ = writeln!(s, "- [{0}](#{0})", p.name);
    }
    s.push('\n');
    for p in &PROGRAMS {
        program_section(&mut s, p);
    }
    s
}

fn program_section(s: &mut String, program: &Program) {
    let mut cmd = program.command();
    cmd.build();
    let _ = writeln!(s, "## {}\n", program.name);
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        let _ = writeln!(s, "{}\n", paragraphs(&about.to_string()));
    }
    let _ = writeln!(s, "```text\n{}\n```\n", usage(&mut cmd));
    s.push_str("| Flag | Value | Default | Environment | Meaning |\n|---|---|---|---|---|\n");
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            flag(arg),
            value(arg),
            default(arg),
            arg.get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default(),
            cell(
                &arg.get_long_help()
                    .or_else(|| arg.get_help())
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        );
    }
    s.push('\n');
    let _ = writeln!(s, "Exit statuses of {}:\n", program.name);
    if program.kind == Kind::Patrol {
        let _ = writeln!(s, "{PATROL_EXIT_NOTE}\n");
    }
    s.push_str("| Code | Meaning |\n|---|---|\n");
    for (code, meaning) in exit_statuses(program.kind) {
        let _ = writeln!(s, "| {code} | {} |", cell(meaning));
    }
    s.push('\n');
}

/// `Usage: …` without the word, as clap renders it.
fn usage(cmd: &mut Command) -> String {
    let u = cmd.render_usage().to_string();
    u.trim_start_matches("Usage:").trim().to_owned()
}

/// `-v, --verbose...` style: the short and long names, or `<NAME>` for a positional.
fn flag(arg: &Arg) -> String {
    if arg.is_positional() {
        return format!("`{}`", arg.get_id().as_str().to_ascii_uppercase());
    }
    let mut names = Vec::new();
    if let Some(c) = arg.get_short() {
        names.push(format!("`-{c}`"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("`--{l}`"));
    }
    let repeat = if matches!(arg.get_action(), ArgAction::Count | ArgAction::Append) {
        " (repeatable)"
    } else {
        ""
    };
    format!("{}{repeat}", names.join(", "))
}

fn value(arg: &Arg) -> String {
    if !arg.get_action().takes_values() {
        return String::new();
    }
    let names = arg
        .get_value_names()
        .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![arg.get_id().as_str().to_ascii_uppercase()]);
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .collect();
    if possible.is_empty() {
        format!("`{}`", names.join(" "))
    } else {
        format!("`{}`", possible.join("` \\| `"))
    }
}

fn default(arg: &Arg) -> String {
    if !arg.get_action().takes_values() {
        return String::new();
    }
    arg.get_default_values()
        .iter()
        .map(|v| format!("`{}`", v.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text for one table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A help text's paragraphs, each on one line, a blank line between.
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed page is what the programs say; regenerate it when this fails.
    #[test]
    fn committed_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/REFERENCE.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let rendered = reference();
        assert!(
            committed == rendered,
            "{REFERENCE_PATH} is stale: run `cargo run -p tmpa-docgen -- --reference \
             {REFERENCE_PATH}` and commit it"
        );
    }

    /// Every flag of every program is in the page, with its exit statuses.
    #[test]
    fn every_flag_and_exit_status_is_listed() {
        let page = reference();
        for p in &PROGRAMS {
            let section = page
                .split(&format!("## {}\n", p.name))
                .nth(1)
                .and_then(|rest| rest.split("\n## ").next())
                .unwrap_or_else(|| panic!("no section for {}", p.name));
            for arg in p.command().get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(l) = arg.get_long() {
                    assert!(section.contains(&format!("`--{l}`")), "{}: --{l}", p.name);
                }
            }
            for (code, _) in exit_statuses(p.kind) {
                assert!(
                    section.contains(&format!("\n| {code} |")),
                    "{}: {code}",
                    p.name
                );
            }
        }
    }

    #[test]
    fn cells_are_one_line_with_bars_escaped() {
        assert_eq!(cell("a |\n  b"), "a \\| b");
    }
}
