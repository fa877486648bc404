//! packaging/container/: `bash packaging/container/build` builds `localhost/tmpa:{version}`
//! FROM scratch, and the image is checked from its own file system (`podman image
//! mount`; no container runtime is needed, and none works where this runs): exactly the
//! five programs, the libraries they load and their loader, the CA bundle and the user
//! files, no shell; the programs run with the image's loader and libraries (`chroot`)
//! as the image's unprivileged user, and compact a tree that user owns; the image runs a
//! program, not a shell, as a non-root user; the CronJob example names that image and
//! only flags its programs have.
//!
//! Needs root and podman (tests/check.sh installs podman): a missing one fails the tests.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use tmpa_tests::{is_root, run_ok as run, stdout_ok as stdout};

const PROGRAMS: [&str; 5] = [
    "tmpa-compact",
    "tmpa-archive",
    "tmpa-tmpclean",
    "tmpa-patrol",
    "tmpa-snapshot",
];

/// The image's user (packaging/container/build writes it; the Containerfile's `USER`).
const UID: u32 = 10001;

/// Debian's CA bundle, which the build copies for the object-store client.
const CERTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

fn tag() -> String {
    format!("localhost/tmpa:{}", env!("CARGO_PKG_VERSION"))
}

/// The image, built once per test process by the real `bash packaging/container/build`
/// from the debug build the tests already made (`TMPA_BUILD_PROFILE=dev`, as the
/// package test does).
fn image() -> String {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            assert!(
                is_root(),
                "the container tests need root (podman image mount, chroot): run them as CI does"
            );
            let tag = tag();
            // A stale image of this tag must not pass for the new one.
            let _ = Command::new("podman")
                .args(["rmi", "--force", &tag])
                .output();
            let started = Instant::now();
            run(Command::new("bash")
                .arg("packaging/container/build")
                .env("TMPA_BUILD_PROFILE", "dev")
                .current_dir(workspace()));
            eprintln!(
                "packaging/container/build: {:.1} s",
                started.elapsed().as_secs_f64()
            );
            tag
        })
        .clone()
}

/// The image's file system, mounted read-only by podman and unmounted on drop. One at a
/// time in this process, so that no test unmounts what another reads.
struct Mounted {
    dir: PathBuf,
    _one: MutexGuard<'static, ()>,
}

impl Mounted {
    fn new() -> Mounted {
        static ONE: Mutex<()> = Mutex::new(());
        let image = image();
        let one = ONE.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = stdout(Command::new("podman").args(["image", "mount", &image]));
        let dir = PathBuf::from(dir.trim());
        assert!(dir.is_dir(), "podman image mount: {}", dir.display());
        Mounted { dir, _one: one }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["image", "unmount", &tag()])
            .output();
    }
}

/// Every entry under `dir` that is not a directory, as absolute paths of the image.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.symlink_metadata().expect("lstat").is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(Path::new("/").join(p.strip_prefix(base).expect("under base")));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// An ELF file's program interpreter and the shared libraries it names (readelf).
fn interp_and_needed(elf: &Path) -> (String, Vec<String>) {
    let headers = stdout(Command::new("readelf").arg("-l").arg(elf));
    let interp = headers
        .lines()
        .find_map(|l| l.split("program interpreter: ").nth(1))
        .unwrap_or_else(|| panic!("{}: no program interpreter", elf.display()))
        .trim_end_matches(']')
        .to_owned();
    let dynamic = stdout(Command::new("readelf").arg("-d").arg(elf));
    let needed = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1))
        .map(|s| s.trim_end_matches(']').to_owned())
        .collect();
    (interp, needed)
}

/// The image holds exactly the five programs, the loader their ELF headers name, one file
/// for each library they need, the CA bundle and the user files: no shell, no other
/// program, no symlink. Everything is root's and writable by nobody else, so the image's
/// user cannot change what it runs.
#[test]
fn image_holds_the_programs_their_libraries_and_no_shell() {
    let m = Mounted::new();
    let have = files(&m.dir);

    let mut want: BTreeSet<PathBuf> = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf", CERTS]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut needed = BTreeSet::new();
    for p in PROGRAMS {
        let bin = PathBuf::from("/usr/bin").join(p);
        assert!(
            have.contains(&bin),
            "{} missing from the image",
            bin.display()
        );
        let (interp, libs) = interp_and_needed(&m.dir.join(bin.strip_prefix("/").unwrap()));
        want.insert(bin);
        // The loader is a NEEDED entry too (by its soname); it is found at its path.
        let interp_name = Path::new(&interp)
            .file_name()
            .expect("name")
            .to_str()
            .expect("utf-8")
            .to_owned();
        want.insert(PathBuf::from(interp));
        needed.extend(libs.into_iter().filter(|l| l.as_str() != interp_name));
    }
    for lib in &needed {
        let found: Vec<&PathBuf> = have
            .iter()
            .filter(|f| f.file_name().is_some_and(|n| n == lib.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "{lib}: {found:?}");
        let dir = found[0].parent().expect("dir");
        assert!(
            [
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib",
                "/usr/lib"
            ]
            .iter()
            .any(|d| dir == Path::new(d)),
            "{}: not where the loader looks",
            found[0].display()
        );
        want.insert(found[0].clone());
    }
    assert_eq!(have, want, "the image's files");

    for sh in ["/bin/sh", "/usr/bin/sh", "/bin/bash", "/bin/busybox"] {
        assert!(!have.contains(Path::new(sh)), "{sh} in the image");
    }
    for f in &have {
        let meta = m
            .dir
            .join(f.strip_prefix("/").unwrap())
            .symlink_metadata()
            .expect("lstat");
        assert!(meta.is_file(), "{}: not a regular file", f.display());
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{}", f.display());
        assert_eq!(
            meta.permissions().mode() & 0o022,
            0,
            "{}: writable by others than root",
            f.display()
        );
    }

    // Whether a passwd or group file has an entry with the numeric id `id` (third field).
    let has_id = |text: &str, id: &str| text.lines().any(|l| l.split(':').nth(2) == Some(id));
    let passwd = fs::read_to_string(m.dir.join("etc/passwd")).expect("passwd");
    assert!(
        has_id(&passwd, &UID.to_string()),
        "no user {UID} in /etc/passwd: {passwd}"
    );
    assert!(!has_id(&passwd, "0"), "/etc/passwd names root: {passwd}");
    let group = fs::read_to_string(m.dir.join("etc/group")).expect("group");
    assert!(
        has_id(&group, &UID.to_string()),
        "no group {UID} in /etc/group: {group}"
    );
    assert_eq!(
        fs::read(m.dir.join(CERTS.trim_start_matches('/'))).expect("CA bundle"),
        fs::read(CERTS).expect("Debian's CA bundle"),
        "the image's CA bundle is not Debian's"
    );
}

/// `chroot --userspec=10001:10001 MOUNT /usr/bin/PROGRAM`: the image's program with its
/// loader and libraries, as the image's user, with no capability.
fn in_image(root: &Path, program: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(format!("--userspec={UID}:{UID}"))
        .arg(root)
        .arg(Path::new("/usr/bin").join(program))
        .env_clear()
        // Where chroot(8) is found; inside, the programs run no other program.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd
}

/// Each program runs from the image as its unprivileged user, with nothing of the host:
/// its loader and libraries are the image's, and `--version` says this version.
#[test]
fn programs_run_from_the_image_as_its_user() {
    let m = Mounted::new();
    for p in PROGRAMS {
        let out = stdout(in_image(&m.dir, p).arg("--version"));
        assert_eq!(out.trim(), format!("{p} {}", env!("CARGO_PKG_VERSION")));
    }
}

/// A copy of the image's file system with a data tree the image's user owns at /data, and
/// no /proc: tmpa-compact run from it as that user, without any capability, compacts
/// the past day and deletes its loose files, as the CronJob does on the volume.
#[test]
fn compaction_runs_in_the_image_as_the_trees_owner() {
    let copy = tempfile::tempdir().expect("tempdir");
    {
        let m = Mounted::new();
        run(Command::new("cp")
            .arg("-a")
            .arg(m.dir.join("."))
            .arg(copy.path()));
    }
    let root = copy.path();
    assert!(!root.join("proc").exists(), "the image has /proc");
    let data = root.join("data");
    let day = "2025-01-15";
    for d in ["notifications", "token_stats", "chat_history"] {
        fs::create_dir_all(data.join(d)).expect("mkdir");
    }
    let day_dir = data.join("token_stats").join(day);
    fs::create_dir_all(&day_dir).expect("mkdir");
    for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
        fs::write(
            day_dir.join(format!("evt_e{i}.json")),
            tmpa_tests::event_json(
                &format!("e{i}"),
                &format!("{day}T12:0{i}:00Z"),
                user,
                "gpt-x",
                10,
                5,
            ),
        )
        .expect("event");
    }
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{UID}:{UID}"))
        .arg(&data));

    let out = in_image(root, "tmpa-compact")
        .args(["--root", "/data", "--json"])
        .output()
        .expect("chroot");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("--json report");
    assert_eq!(report["exit_code"], 0, "{report:#}");
    assert_eq!(report["counts"]["merged"], 3, "{report:#}");
    assert_eq!(report["counts"]["deleted"], 3, "{report:#}");
    let left: Vec<String> = fs::read_dir(&day_dir)
        .expect("day")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with("evt_")),
        "loose events left: {left:?}"
    );
    let compacted = fs::read_to_string(day_dir.join("_compacted.json")).expect("_compacted");
    for i in 0..3 {
        assert!(compacted.contains(&format!("\"e{i}\"")), "{compacted}");
    }
    let owner = fs::metadata(day_dir.join("_compacted.json"))
        .expect("stat")
        .uid();
    assert_eq!(owner, UID, "_compacted.json is the tree owner's");
}

/// The image runs a program, not a shell: no ENTRYPOINT, a command that is one of the
/// five programs, a non-root user that /etc/passwd names, and this version's label.
#[test]
fn image_runs_a_program_as_a_non_root_user() {
    let image = image();
    let text = stdout(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        &image,
    ]));
    let config: serde_json::Value = serde_json::from_str(&text).expect("config JSON");
    let user = config["User"].as_str().unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !uid.is_empty() && uid != "0" && uid != "root",
        "the image runs as root: User={user:?}"
    );
    assert_eq!(uid, UID.to_string(), "User={user:?}");
    let entrypoint = config["Entrypoint"].as_array().cloned().unwrap_or_default();
    assert!(entrypoint.is_empty(), "Entrypoint {entrypoint:?}");
    let cmd: Vec<&str> = config["Cmd"]
        .as_array()
        .expect("Cmd")
        .iter()
        .map(|v| v.as_str().expect("string"))
        .collect();
    assert!(
        PROGRAMS
            .iter()
            .any(|p| cmd.first() == Some(&format!("/usr/bin/{p}").as_str())),
        "Cmd {cmd:?} is not one of the programs"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "{config:#}"
    );
}

/// The CronJob example uses this version's image, the restrictions docs/OPERATIONS.md
/// describes, and, in every command line it shows (the job's and the commented ones),
/// a program of the image with flags that program's `--help` lists.
#[test]
fn cronjob_example_matches_the_image() {
    let yaml = fs::read_to_string(workspace().join("packaging/container/cronjob.yaml"))
        .expect("cronjob.yaml");
    assert!(
        yaml.contains(&format!("image: {}", tag())),
        "cronjob.yaml does not use {}",
        tag()
    );
    for line in [
        "concurrencyPolicy: Forbid",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "persistentVolumeClaim:",
    ] {
        assert!(
            yaml.lines().any(|l| l.trim() == line),
            "cronjob.yaml lacks `{line}`"
        );
    }
    assert!(
        !yaml
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("fsGroup")),
        "fsGroup would chown the whole volume at each mount"
    );

    let m = Mounted::new();
    let mut shown = BTreeSet::new();
    for line in yaml.lines() {
        let Some(list) = line.split("command: [").nth(1) else {
            continue;
        };
        let words: Vec<&str> = list
            .trim_end_matches(']')
            .split(',')
            .map(|w| w.trim().trim_matches('"'))
            .collect();
        let program = words[0]
            .strip_prefix("/usr/bin/")
            .unwrap_or_else(|| panic!("{line}: not /usr/bin/PROGRAM"));
        assert!(PROGRAMS.contains(&program), "{line}");
        let help = stdout(in_image(&m.dir, program).arg("--help"));
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                    .any(|w| w == *flag),
                "{line}: {program} has no {flag}"
            );
        }
        shown.insert(program);
    }
    for p in [
        "tmpa-compact",
        "tmpa-archive",
        "tmpa-tmpclean",
        "tmpa-patrol",
    ] {
        assert!(shown.contains(p), "cronjob.yaml shows no command for {p}");
    }
}
