//! packaging/: `bash packaging/build-deb` builds `target/debian/tmpa_{version}_{arch}.deb`
//! holding what an operator needs (programs, man pages, completions, units, cron.d,
//! logrotate, docs); the packaged programs and man pages work; dpkg installs it into a
//! throwaway root without enabling or scheduling anything, the installed cron.d deletes
//! nothing even with every line uncommented, and a purge leaves nothing behind (nor a
//! warning, on a merged-/usr root); lintian finds no error, and the changelog is this
//! version's; the installed OPERATIONS.md names only what the package ships; and the
//! documented rollout, done on the installed package as a new operator does it, raises no
//! alert and sees every failure (`rollout`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use tmpa_docgen::{PROGRAMS, SHELLS, completion_file_name};
use tmpa_tests::{Tree, age, run_ok as run, stdout_ok as stdout};

/// The documented rollout on the installed package (the package built once, here).
#[path = "packaging/rollout.rs"]
mod rollout;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

/// The package, built once per test process by the real `bash packaging/build-deb`,
/// under exactly the name the README promises, from the debug build the tests already
/// made (`TMPA_BUILD_PROFILE=dev`: the same files in the same places; a release build
/// of the workspace would double the test command's time).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
        let name = format!("tmpa_{}_{}.deb", env!("CARGO_PKG_VERSION"), arch.trim());
        let deb = workspace().join("target/debian").join(name);
        let _ = fs::remove_file(&deb);
        run(Command::new("bash")
            .arg("packaging/build-deb")
            .env("TMPA_BUILD_PROFILE", "dev")
            .current_dir(workspace()));
        assert!(deb.is_file(), "build-deb did not write {}", deb.display());
        deb
    })
}

/// The package's files, extracted once (`dpkg-deb -x`).
fn extracted() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb())
            .arg(dir.path()));
        dir
    })
    .path()
}

/// The files (not directories) the package installs, as `dpkg-deb -c` lists them:
/// path → (mode, owner/group).
fn listing() -> Vec<(String, String, String)> {
    stdout(Command::new("dpkg-deb").arg("-c").arg(deb()))
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let path = w[5].strip_prefix('.').expect("./path").to_owned();
            (path, w[0].to_owned(), w[1].to_owned())
        })
        .collect()
}

/// The package holds the five programs, a gzipped man page each, completions for bash,
/// zsh and fish where each shell looks, the units of the scheduled ones and their
/// generator, the configuration (root only), cron.d and logrotate as conffiles, the alert
/// rules and dashboard, the docs: exactly these files, owned by root, with the control
/// fields an installer reads.
#[test]
fn package_holds_what_an_operator_needs() {
    let mut want: BTreeSet<String> = BTreeSet::new();
    for p in &PROGRAMS {
        let n = p.name;
        want.insert(format!("/usr/bin/{n}"));
        want.insert(format!("/usr/share/man/man1/{n}.1.gz"));
        want.insert(format!("/usr/share/bash-completion/completions/{n}"));
        want.insert(format!("/usr/share/zsh/vendor-completions/_{n}"));
        want.insert(format!("/usr/share/fish/vendor_completions.d/{n}.fish"));
        if p.scheduled() {
            want.insert(format!("/usr/lib/systemd/system/{n}.service"));
            want.insert(format!("/usr/lib/systemd/system/{n}.timer"));
        }
    }
    for f in [
        "/etc/default/tmpa",
        "/etc/tmpa/archive.env",
        "/usr/sbin/tmpa",
        "/usr/share/man/man8/tmpa.8.gz",
        "/lib/systemd/system-generators/tmpa-generator",
        "/usr/share/tmpa/monitoring/tmpa.rules.yml",
        "/usr/share/tmpa/monitoring/tmpa-dashboard.json",
        "/etc/cron.d/tmpa",
        "/etc/logrotate.d/tmpa",
        "/usr/share/doc/tmpa/README.md",
        "/usr/share/doc/tmpa/OPERATIONS.md",
        "/usr/share/doc/tmpa/FORMAT.md",
        "/usr/share/doc/tmpa/REFERENCE.md",
        "/usr/share/doc/tmpa/PERFORMANCE.md",
        "/usr/share/doc/tmpa/SCALING.md",
        "/usr/share/doc/tmpa/RELIABILITY.md",
        "/usr/share/doc/tmpa/copyright",
        "/usr/share/doc/tmpa/changelog.gz",
        "/usr/share/lintian/overrides/tmpa",
    ] {
        want.insert(f.to_owned());
    }
    let files = listing();
    let have: BTreeSet<String> = files.iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(have, want, "the package's files");
    for (path, mode, owner) in &files {
        assert_eq!(owner, "0/0", "{path}: owned by root");
        let want_mode = if path.starts_with("/usr/bin/")
            || path.starts_with("/usr/sbin/")
            || path.contains("-generators/")
        {
            "-rwxr-xr-x"
        } else if path == "/etc/tmpa/archive.env" {
            // The object store's keys: root's alone.
            "-rw-------"
        } else if path == "/etc/default/tmpa" {
            // Root's, the patrol's read-only store key may be there.
            "-rw-r-----"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, want_mode, "{path}");
    }

    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(deb()));
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{info}"))
            .to_owned()
    };
    assert_eq!(field("Package"), "tmpa");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(
        field("Architecture"),
        stdout(Command::new("dpkg").arg("--print-architecture")).trim()
    );
    assert!(
        field("Depends").contains("libc6"),
        "Depends from dpkg-shlibdeps"
    );
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            info.contains(&format!(" {script} ")),
            "{script} in:\n{info}"
        );
    }
    let control = tempfile::tempdir().expect("tempdir");
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb())
        .arg(control.path()));
    let conffiles = fs::read_to_string(control.path().join("conffiles")).expect("conffiles");
    assert_eq!(
        conffiles.lines().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "/etc/default/tmpa",
            "/etc/tmpa/archive.env",
            "/etc/cron.d/tmpa",
            "/etc/logrotate.d/tmpa"
        ])
    );
}

/// Every packaged program runs and reports the package's version; the binaries are
/// stripped.
#[test]
fn packaged_programs_run() {
    for p in &PROGRAMS {
        let bin = extracted().join("usr/bin").join(p.name);
        let version = stdout(Command::new(&bin).arg("--version"));
        assert_eq!(
            version.trim(),
            format!("{} {}", p.name, env!("CARGO_PKG_VERSION"))
        );
        let file = stdout(Command::new("readelf").arg("-S").arg(&bin));
        assert!(!file.contains(".debug_info"), "{}: not stripped", p.name);
    }
}

/// Each man page is gzipped, formats without a warning, carries the program's long
/// flags as the packaged binary's --help lists them (generated, so it cannot drift),
/// and the sections clap has no field for.
#[test]
fn packaged_man_pages_render_and_match_the_programs() {
    let man = Command::new("man").arg("--version").output().is_ok();
    for p in &PROGRAMS {
        let page = extracted().join(format!("usr/share/man/man1/{}.1.gz", p.name));
        let gz = fs::read(&page).expect("man page");
        assert_eq!(gz[..2], [0x1f, 0x8b], "{}: gzip", p.name);
        let bin = extracted().join("usr/bin").join(p.name);
        let help = stdout(Command::new(&bin).arg("--help"));
        let flags: BTreeSet<&str> = help
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| w.starts_with("--") && w.len() > 2)
            // A repeatable flag (-v, -q) is listed as `--verbose...`.
            .map(|w| w.trim_end_matches("..."))
            .collect();
        assert!(flags.contains("--root"), "{}: {flags:?}", p.name);
        let text = if man {
            let out = run(Command::new("man")
                .args(["--warnings", "-l"])
                .arg(&page)
                .env("MANWIDTH", "200")
                // Unset, man-db strips bold and underline when writing to a pipe.
                .env_remove("MAN_KEEP_FORMATTING")
                .env_remove("MANPAGER")
                .env("PAGER", "cat"));
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(warnings.trim().is_empty(), "{}: {warnings}", p.name);
            String::from_utf8(out.stdout).expect("utf-8")
        } else {
            println!("man is not installed: reading the roff source instead");
            let roff = stdout(Command::new("gzip").arg("-dc").arg(&page));
            assert!(roff.contains(&format!("\n.TH {} 1 ", p.name)), "{roff}");
            roff.replace("\\-", "-")
                .replace(".SH ", "")
                .replace('"', "")
        };
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "FILES",
            "SEE ALSO",
        ] {
            assert!(
                text.lines().any(|l| l.trim_end() == section),
                "{}: no {section} section:\n{text}",
                p.name
            );
        }
        for flag in &flags {
            assert!(
                text.contains(flag),
                "{}: {flag} missing from the man page",
                p.name
            );
        }
    }
}

/// The completions are where each shell looks, name the program, and the bash one
/// loads: sourcing it registers a completion for the program.
#[test]
fn packaged_completions_load() {
    let dirs = [
        "usr/share/bash-completion/completions",
        "usr/share/zsh/vendor-completions",
        "usr/share/fish/vendor_completions.d",
    ];
    for p in &PROGRAMS {
        for ((shell, _), dir) in SHELLS.iter().zip(dirs) {
            let file = extracted()
                .join(dir)
                .join(completion_file_name(*shell, p.name));
            let text =
                fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(text.contains(p.name), "{}", file.display());
            let fish = file.extension().is_some_and(|e| e == "fish");
            let root_flag = if fish { "-l root " } else { "--root" };
            assert!(text.contains(root_flag), "{}: {root_flag}", file.display());
        }
        let bash = extracted()
            .join(dirs[0])
            .join(completion_file_name(SHELLS[0].0, p.name));
        let registered = stdout(Command::new("bash").arg("-c").arg(format!(
            "source '{}' && complete -p {}",
            bash.display(),
            p.name
        )));
        assert!(registered.trim_end().ends_with(p.name), "{registered}");
    }
}

/// The packaged units, generator, configuration, logrotate file, alert rules, dashboard
/// and cron.d are the repository's (cron.d as tmpa-docgen makes it from the crontab;
/// monitoring.rs tests the rules), and systemd-analyze verify accepts the units where
/// the package puts them, beside the packaged programs and configuration.
#[test]
fn packaged_schedule_is_the_repository_one() {
    let cron = workspace().join("cron");
    for e in fs::read_dir(cron.join("systemd")).expect("units") {
        let e = e.expect("entry");
        let packaged = extracted()
            .join("usr/lib/systemd/system")
            .join(e.file_name());
        assert_eq!(
            fs::read(&packaged).expect("packaged unit"),
            fs::read(e.path()).expect("unit"),
            "{}",
            packaged.display()
        );
    }
    for (packaged, repo) in [
        ("etc/logrotate.d/tmpa", "logrotate/tmpa"),
        ("etc/default/tmpa", "tmpa.default"),
        (
            "lib/systemd/system-generators/tmpa-generator",
            "tmpa-generator",
        ),
        ("usr/sbin/tmpa", "tmpa"),
        ("etc/tmpa/archive.env", "archive.env"),
        (
            "usr/share/tmpa/monitoring/tmpa.rules.yml",
            "monitoring/tmpa.rules.yml",
        ),
        (
            "usr/share/tmpa/monitoring/tmpa-dashboard.json",
            "monitoring/tmpa-dashboard.json",
        ),
    ] {
        assert_eq!(
            fs::read(extracted().join(packaged)).expect("packaged"),
            fs::read(cron.join(repo)).expect("repository's"),
            "{packaged}"
        );
    }
    let crontab = fs::read_to_string(cron.join("tmpa.crontab")).expect("crontab");
    assert_eq!(
        fs::read_to_string(extracted().join("etc/cron.d/tmpa")).expect("cron.d"),
        tmpa_docgen::cron_d(&crontab).expect("cron_d")
    );
    let units: Vec<PathBuf> = fs::read_dir(extracted().join("usr/lib/systemd/system"))
        .expect("units")
        .map(|e| e.expect("entry").path())
        .collect();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .arg(format!("--root={}", extracted().display()))
        .args(&units)
        .output()
        .expect("systemd-analyze is missing: apt-get install systemd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "verify: {err}"
    );
}

/// A throwaway root with an empty dpkg database.
fn dpkg_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let admin = root.path().join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(d)).expect("mkdir");
    }
    fs::write(admin.join("status"), "").expect("status");
    fs::write(admin.join("available"), "").expect("available");
    root
}

/// dpkg into `root`, running the maintainer scripts outside a chroot with DPKG_ROOT set
/// (the scripts honour it), without the host's libc6 registered there.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args))
}

/// Everything under `dir` (relative paths), except dpkg's own database.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(base).expect("under base").to_path_buf();
            if rel.starts_with("var/lib/dpkg") {
                continue;
            }
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            }
            out.insert(rel);
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Purges the package from `root`, which held `before` before it was installed: nothing
/// is left but the directories postinst made the log directory in, and dpkg warns of
/// nothing (a directory it could not remove: the /usr-merge aliases).
fn purge_leaves_nothing(root: &Path, before: &BTreeSet<PathBuf>) {
    let out = dpkg(root, &["--purge", "tmpa"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("warning"), "dpkg --purge: {said}");
    let left: BTreeSet<PathBuf> = tree(root).difference(before).cloned().collect();
    // deb-systemd-helper leaves its (empty) state and unit directories, as for any package
    // whose units it handled.
    let allowed: BTreeSet<PathBuf> = [
        "var",
        "var/log",
        "var/lib/systemd",
        "etc",
        "etc/systemd",
        "etc/systemd/system",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for dir in left.intersection(&allowed) {
        assert!(root.join(dir).is_dir(), "{}", dir.display());
    }
    assert!(
        left.is_subset(&allowed),
        "the purge left {:?}",
        left.difference(&allowed).collect::<Vec<_>>()
    );
}

/// dpkg installs the package into a throwaway root: /var/log/tmpa is made 0750 root:adm,
/// no timer is enabled, the cron.d file has no active job, `dpkg --verify` is clean;
/// a purge removes every file, the conffiles and the logs.
#[test]
fn installs_enabling_nothing_and_purges_clean() {
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root (postinst gives /var/log/tmpa to root:adm); CI runs as root",
    ) else {
        return;
    };
    let root = dpkg_root();
    let r = root.path();
    with_system_packages(r);
    let before = tree(r);
    dpkg(r, &["-i", &deb().display().to_string()]);

    let log = fs::metadata(r.join("var/log/tmpa")).expect("/var/log/tmpa");
    assert!(log.is_dir());
    assert_eq!(log.permissions().mode() & 0o7777, 0o750);
    assert_eq!(log.uid(), 0);
    let adm = stdout(Command::new("getent").args(["group", "adm"]));
    let adm_gid: u32 = adm.split(':').nth(2).expect("gid").parse().expect("gid");
    assert_eq!(log.gid(), adm_gid, "group adm");

    let installed = tree(r);
    let enabled: Vec<&PathBuf> = installed
        .iter()
        .filter(|p| p.starts_with("etc/systemd") || p.to_string_lossy().contains(".wants"))
        .collect();
    assert!(enabled.is_empty(), "installing enabled {enabled:?}");
    if Command::new("systemctl").arg("--version").output().is_ok() {
        for p in PROGRAMS.iter().filter(|p| p.scheduled()) {
            let out = Command::new("systemctl")
                .arg(format!("--root={}", r.display()))
                .args(["is-enabled", &format!("{}.timer", p.name)])
                .output()
                .expect("systemctl");
            let state = String::from_utf8_lossy(&out.stdout);
            assert_eq!(state.trim(), "disabled", "{}.timer", p.name);
        }
    }
    let cron_d = fs::read_to_string(r.join("etc/cron.d/tmpa")).expect("cron.d");
    for line in cron_d.lines().map(str::trim) {
        let is_env = line.split_once('=').is_some_and(|(n, _)| {
            !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        assert!(
            line.is_empty() || line.starts_with('#') || is_env,
            "an active line in the installed cron.d: {line}"
        );
    }
    let verify = stdout(
        Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args(["--verify", "tmpa"]),
    );
    assert!(verify.trim().is_empty(), "dpkg --verify: {verify}");

    purge_leaves_nothing(r, &before);
}

/// The installed /etc/cron.d/tmpa deletes nothing even with every job line uncommented:
/// on a tree where a real run of tmpa-compact and tmpa-archive would delete (past-day
/// loose events, a session idle for 60 days, a stale temporary), each uncommented line
/// (run by sh as cron would, with the packaged programs, its wrappers and the installed
/// /etc/default/tmpa, whose modes are --dry-run) leaves the data tree as it was; then the
/// same programs without --dry-run do change it.
#[test]
fn uncommented_cron_d_deletes_nothing() {
    let t = Tree::new();
    for i in 0..3 {
        t.event("2026-01-05", &format!("e{i}"), "u1", 3, 4);
    }
    let session = t.file("chat_history/u1/sessions/s1.json", br#"{"m":[]}"#);
    age(&session, Duration::from_secs(60 * 86_400));
    t.file("chat_history/u1/profile/p.json", b"{}");
    let final_file = t.event("2026-01-06", "f1", "u1", 1, 1);
    let tmp = t.file(
        "token_stats/2026-01-06/evt_f1.json.tmp.42",
        fs::read(&final_file).expect("final"),
    );
    age(&tmp, Duration::from_secs(3 * 86_400));
    let before = t.snapshot();

    let out = tempfile::tempdir().expect("tempdir");
    let bin_dir = extracted().join("usr/bin");
    let cron_d = fs::read_to_string(extracted().join("etc/cron.d/tmpa")).expect("cron.d");
    // The installed configuration, its root and metrics directory moved here.
    let conf = out.path().join("tmpa.conf");
    let shipped = fs::read_to_string(extracted().join("etc/default/tmpa")).expect("config");
    let moved = shipped
        .replace(
            "TMPA_ROOT=/opt/app",
            &format!("TMPA_ROOT={}", t.root().display()),
        )
        .replace(
            "TMPA_METRICS_DIR=/var/lib/prometheus/node-exporter",
            &format!("TMPA_METRICS_DIR={}", out.path().display()),
        );
    assert_ne!(moved, shipped);
    fs::write(&conf, moved).expect("config");
    let mut jobs = 0;
    for line in cron_d.lines() {
        let Some(job) = line.strip_prefix('#') else {
            continue;
        };
        let w: Vec<&str> = job.split_whitespace().collect();
        if w.len() < 7 || w[5] != "root" || w[6] != "test" {
            continue; // a comment, not a job
        }
        jobs += 1;
        let command = w[6..]
            .join(" ")
            .replace("/usr/bin/", &format!("{}/", bin_dir.display()))
            .replace("/var/log/tmpa/", &format!("{}/", out.path().display()))
            .replace("/etc/default/tmpa", &conf.display().to_string());
        let status = Command::new("sh")
            .args(["-c", &command])
            .env_remove("TMPA_ROOT")
            .status()
            .expect("sh");
        // The patrol reports critical (2: no supervisorctl here); the dry runs exit 0
        // or 1 (the stale temporary is young by ctime: kept, and said so).
        assert!(matches!(status.code(), Some(0..=2)), "{command}: {status}");
        assert_eq!(t.snapshot(), before, "{command} changed the data tree");
    }
    assert_eq!(
        jobs,
        PROGRAMS.iter().filter(|p| p.scheduled()).count(),
        "every scheduled program has a job line:\n{cron_d}"
    );
    let logs: Vec<String> = ["compact", "archive", "tmpclean"]
        .iter()
        .map(|j| fs::read_to_string(out.path().join(format!("{j}.log"))).expect("log"))
        .collect();
    for log in &logs {
        assert!(log.contains("DRY-RUN"), "{log}");
    }

    for p in ["tmpa-compact", "tmpa-archive"] {
        let status = Command::new(bin_dir.join(p))
            .env("TMPA_ROOT", t.root())
            .output()
            .expect("real run");
        assert!(
            status.status.code().is_some_and(|c| c <= 1),
            "{p}: {status:?}"
        );
    }
    assert_ne!(t.snapshot(), before, "the real runs had something to do");
    assert!(
        !session.exists(),
        "the real archive run moved the idle session"
    );
}

/// The units the maintainer scripts name: their `units=` line, the same in each.
fn script_units() -> BTreeSet<String> {
    let mut lists = Vec::new();
    for script in ["postinst", "prerm", "postrm"] {
        let text =
            fs::read_to_string(workspace().join("packaging/debian").join(script)).expect("script");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("units=\""))
            .unwrap_or_else(|| panic!("{script}: no units= line"));
        let list: BTreeSet<String> = line
            .trim_end_matches('"')
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        lists.push(list);
    }
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "{lists:?}");
    lists.pop().expect("three lists")
}

/// `systemctl --root=R is-enabled UNIT`: enabled, disabled, masked...
fn enable_state(root: &Path, unit: &str) -> String {
    let out = Command::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .args(["is-enabled", unit])
        .output()
        .expect("systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A throwaway root laid out as Debian's since bookworm (merged /usr: /lib is a link to
/// usr/lib), where a unit moved from /lib to /usr/lib could be lost by a careless upgrade;
/// with a package that owns what bookworm's own packages do (/etc: base-files;
/// /usr/lib/systemd/system and /lib/systemd/system-generators with a generator in it:
/// systemd), so that a directory this package names under its other alias has two names
/// in dpkg's database, and a purge warns that it is "not empty".
fn merged_usr_root() -> tempfile::TempDir {
    let root = dpkg_root();
    fs::create_dir_all(root.path().join("usr/lib")).expect("mkdir");
    std::os::unix::fs::symlink("usr/lib", root.path().join("lib")).expect("symlink");
    with_system_packages(root.path());
    root
}

/// Installs into `root` a package that owns what a Debian system's own packages own of
/// the directories this package uses (see [`merged_usr_root`]).
fn with_system_packages(root: &Path) {
    let work = tempfile::tempdir().expect("tempdir");
    let pkg = work.path().join("pkg");
    fs::create_dir_all(pkg.join("DEBIAN")).expect("mkdir");
    for (file, text) in [
        (
            "lib/systemd/system-generators/systemd-fstab-generator",
            "#!/bin/sh\n",
        ),
        ("usr/lib/systemd/system/fake.service", "[Service]\n"),
        ("etc/fake.conf", ""),
    ] {
        let p = pkg.join(file);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: fake-systemd\nVersion: 252\nArchitecture: all\nMaintainer: t <t@t>\n\
         Description: owns /lib/systemd/system-generators, as bookworm's systemd\n",
    )
    .expect("control");
    let deb = work.path().join("fake-systemd.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&pkg)
        .arg(&deb));
    dpkg(root, &["-i", &deb.display().to_string()]);
}

/// The maintainer scripts handle exactly the packaged units; the admin's choice of
/// timers survives a remove and a reinstall (the removed units are masked, not
/// disabled, as dh_installsystemd does), a timer never enabled stays disabled, and a
/// purge forgets the choice and leaves nothing behind.
#[test]
fn remove_and_reinstall_keep_the_admins_enabled_timers() {
    let packaged: BTreeSet<String> = listing()
        .into_iter()
        .filter_map(|(p, _, _)| {
            p.strip_prefix("/usr/lib/systemd/system/")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(script_units(), packaged, "the scripts' units= lists");
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root (dpkg into a throwaway root); CI runs as root",
    ) else {
        return;
    };
    let root = merged_usr_root();
    let r = root.path();
    let before = tree(r);
    let deb = deb().display().to_string();
    dpkg(r, &["-i", &deb]);
    run(Command::new("systemctl")
        .arg(format!("--root={}", r.display()))
        .args(["enable", "tmpa-patrol.timer"]));
    assert_eq!(enable_state(r, "tmpa-patrol.timer"), "enabled");

    dpkg(r, &["-r", "tmpa"]);
    assert!(!r.join("usr/bin/tmpa-patrol").exists(), "removed");
    dpkg(r, &["-i", &deb]);
    assert_eq!(
        enable_state(r, "tmpa-patrol.timer"),
        "enabled",
        "the admin's timer after remove and reinstall"
    );
    assert_eq!(enable_state(r, "tmpa-compact.timer"), "disabled");

    purge_leaves_nothing(r, &before);
}

/// An upgrade from the previous release's layout (units in /lib/systemd/system, on a
/// merged-/usr root, a lower version) to this package: the admin's edited
/// /etc/default/tmpa is kept, an enabled timer stays enabled, every unit file is still
/// there under /usr/lib (none lost to the /lib alias), and `dpkg --verify` is clean.
#[test]
fn upgrade_from_the_previous_layout_keeps_settings_and_timers() {
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root (dpkg into a throwaway root); CI runs as root",
    ) else {
        return;
    };
    // The previous package: this one's files with the units where 0.1.0 put them, and a
    // lower version.
    let work = tempfile::tempdir().expect("tempdir");
    let unpacked = work.path().join("old");
    run(Command::new("dpkg-deb").arg("-R").arg(deb()).arg(&unpacked));
    fs::create_dir_all(unpacked.join("lib/systemd")).expect("mkdir");
    fs::rename(
        unpacked.join("usr/lib/systemd/system"),
        unpacked.join("lib/systemd/system"),
    )
    .expect("move the units");
    let control = unpacked.join("DEBIAN/control");
    let text = fs::read_to_string(&control).expect("control");
    let version = format!("Version: {}", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&version), "{text}");
    fs::write(&control, text.replace(&version, "Version: 0.0.1")).expect("control");
    let sums = unpacked.join("DEBIAN/md5sums");
    if let Ok(text) = fs::read_to_string(&sums) {
        fs::write(
            &sums,
            text.replace("  usr/lib/systemd/system/", "  lib/systemd/system/"),
        )
        .expect("md5sums");
    }
    let old = work.path().join("tmpa_0.0.1.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&unpacked)
        .arg(&old));

    let root = merged_usr_root();
    let r = root.path();
    dpkg(r, &["-i", &old.display().to_string()]);
    run(Command::new("systemctl")
        .arg(format!("--root={}", r.display()))
        .args(["enable", "tmpa-compact.timer"]));
    let conf = r.join("etc/default/tmpa");
    let edited = fs::read_to_string(&conf)
        .expect("config")
        .replace("TMPA_COMPACT_MODE=--dry-run", "TMPA_COMPACT_MODE=");
    fs::write(&conf, &edited).expect("edit");

    dpkg(r, &["--force-confold", "-i", &deb().display().to_string()]);
    assert_eq!(fs::read_to_string(&conf).expect("config"), edited, "kept");
    assert_eq!(enable_state(r, "tmpa-compact.timer"), "enabled");
    assert_eq!(enable_state(r, "tmpa-patrol.timer"), "disabled");
    for unit in script_units() {
        assert!(
            r.join("usr/lib/systemd/system").join(&unit).is_file(),
            "{unit} lost in the upgrade"
        );
    }
    let verify = stdout(
        Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args(["--verify", "tmpa"]),
    );
    // The edited conffile is the one expected difference.
    let unexpected: Vec<&str> = verify
        .lines()
        .filter(|l| !l.ends_with(" /etc/default/tmpa"))
        .collect();
    assert!(unexpected.is_empty(), "dpkg --verify: {verify}");
}

/// lintian, Debian's package checker, finds no error in the package; its whole report is
/// printed for the record. A missing lintian fails the test: tests/check.sh installs it.
#[test]
fn lintian_finds_no_error() {
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--display-level", ">=warning"])
        .arg(deb())
        .output()
        .expect("lintian is missing: apt-get install lintian (tests/check.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("lintian report:\n{text}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // lintian exits 1 on an error tag, 2 when it could not check at all: no report then.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "lintian: {}\n{text}",
        out.status
    );
}

/// The package's changelog.gz is packaging/debian/changelog, gzipped, and its newest
/// entry is this version (a release without its entry would ship a stale changelog).
#[test]
fn changelog_is_the_debian_changelog_of_this_version() {
    let gz =
        fs::File::open(extracted().join("usr/share/doc/tmpa/changelog.gz")).expect("changelog.gz");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text)
        .expect("gunzip changelog.gz");
    let source = workspace().join("packaging/debian/changelog");
    assert_eq!(text, fs::read_to_string(&source).expect("changelog"));
    let version = stdout(
        Command::new("dpkg-parsechangelog")
            .arg("-l")
            .arg(&source)
            .args(["-S", "Version"]),
    );
    assert_eq!(
        version.trim(),
        env!("CARGO_PKG_VERSION"),
        "{}",
        source.display()
    );
}

/// The installed OPERATIONS.md names only what the package ships: every document it names
/// by file name is beside it in /usr/share/doc/tmpa/, every /usr/share path it names is in
/// the package, and a file of the source tree (cron/, packaging/, tests/, ...) is named
/// only as a link into the repository, or in the commands run in a checkout (code blocks).
#[test]
fn installed_operations_names_only_what_the_package_ships() {
    let repository = {
        let toml = fs::read_to_string(workspace().join("Cargo.toml")).expect("Cargo.toml");
        toml.lines()
            .find_map(|l| l.strip_prefix("repository = \""))
            .and_then(|r| r.strip_suffix('"'))
            .expect("repository")
            .to_owned()
    };
    let doc = fs::read_to_string(extracted().join("usr/share/doc/tmpa/OPERATIONS.md"))
        .expect("OPERATIONS.md");
    // Prose only: the code blocks are commands (some run in a checkout).
    let mut prose: String = doc.split("```").step_by(2).collect::<Vec<_>>().join(" ");
    // Links into the repository, their text included, then bare URLs of it.
    while let Some(at) = prose.find(&format!("]({repository}")) {
        let start = prose[..at].rfind('[').expect("a link's [");
        let end = at + prose[at..].find(')').expect("a link's )");
        prose.replace_range(start..=end, " ");
    }
    while let Some(at) = prose.find(&repository) {
        let end = prose[at..]
            .find(|c: char| c.is_whitespace() || c == '`' || c == ')')
            .map_or(prose.len(), |e| at + e);
        prose.replace_range(at..end, " ");
    }
    let shipped: BTreeSet<String> = listing().into_iter().map(|(p, _, _)| p).collect();
    let mut wrong = Vec::new();
    for word in prose.split(|c: char| c.is_whitespace() || "`()[]\"',;:".contains(c)) {
        let word = word.trim_end_matches(['.', '*']);
        if [
            "docs/",
            "cron/",
            "tests/",
            "packaging/",
            "bench/",
            "target/",
        ]
        .iter()
        .any(|p| word.starts_with(p) && word.len() > p.len())
        {
            wrong.push(format!("{word}: a file of the source tree, not a link"));
        } else if word.ends_with(".md") && !word.contains('/') {
            if !shipped.contains(&format!("/usr/share/doc/tmpa/{word}")) {
                wrong.push(format!("{word}: not installed beside OPERATIONS.md"));
            }
        } else if (word.starts_with("/usr/share/doc/tmpa/") || word.starts_with("/usr/share/tmpa/"))
            && !shipped.iter().any(|p| p.starts_with(word))
        {
            wrong.push(format!("{word}: not in the package"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the installed OPERATIONS.md names:\n{}",
        wrong.join("\n")
    );
}

/// `/usr/sbin/tmpa` has its page, tmpa(8), which formats without a warning and names
/// every program it runs and the settings file it reads; the script refuses an unknown
/// program (exit 2) and a configuration it cannot read, saying to run it as root.
#[test]
fn the_wrapper_has_its_page_and_refuses_what_it_cannot_run() {
    let page = extracted().join("usr/share/man/man8/tmpa.8.gz");
    let out = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANWIDTH", "200")
        .env("PAGER", "cat"));
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "tmpa(8): {warnings}");
    let text = String::from_utf8_lossy(&out.stdout);
    for p in &PROGRAMS {
        assert!(text.contains(p.name), "tmpa(8) names {}", p.name);
    }
    assert!(text.contains("/etc/default/tmpa"), "{text}");
    let wrapper = extracted().join("usr/sbin/tmpa");
    let r: tmpa_tests::Run = Command::new("sh")
        .arg(&wrapper)
        .arg("frobnicate")
        .output()
        .expect("sh")
        .into();
    assert_eq!(r.code, 2, "{r:?}");
    let r: tmpa_tests::Run = Command::new("sh")
        .arg(&wrapper)
        .args(["compact", "--dry-run"])
        .env("TMPA_CONFIG_FILE", "/nonexistent/tmpa")
        .output()
        .expect("sh")
        .into();
    assert!(r.code == 2 && r.stderr.contains("run it as root"), "{r:?}");
}
