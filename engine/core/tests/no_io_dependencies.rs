//! The core must stay pure: its normal dependency tree holds no IO crate, and
//! its sources never reach for the filesystem, the network, processes,
//! threads or the clock.

use std::path::Path;
use std::process::Command;

const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "async-std",
    "mio",
    "socket2",
    "rusqlite",
    "libsqlite3-sys",
    "git2",
    "libgit2-sys",
    "reqwest",
    "hyper",
    "ureq",
    "axum",
    "tonic",
    "rand",
    "getrandom",
    "chrono",
    "time",
    "jiff",
];

const FORBIDDEN_SOURCE: &[&str] = &[
    "std::fs",
    "std::net::Tcp",
    "std::net::Udp",
    "std::process",
    "std::thread",
    "std::env",
    "SystemTime",
    "Instant::now",
    "std::io::stdin",
    "println!",
    "eprintln!",
];

#[test]
fn normal_dependency_tree_has_no_io_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "neutral-core"])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("utf-8 cargo tree");
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"neutral-core"),
        "unexpected cargo tree output:\n{tree}"
    );
    let offending: Vec<&&str> = crates
        .iter()
        .filter(|c| FORBIDDEN_CRATES.contains(c))
        .collect();
    assert!(
        offending.is_empty(),
        "IO crates in neutral-core's tree: {offending:?}\n{tree}"
    );
}

#[test]
fn sources_do_not_touch_the_outside_world() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offending = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for pattern in FORBIDDEN_SOURCE {
                    if line.contains(pattern) {
                        offending.push(format!("{}:{}: {pattern}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        offending.is_empty(),
        "IO in the pure core:\n{}",
        offending.join("\n")
    );
}
