//! Stamps the binary with the git commit it was built from and the build
//! profile, for `velox --version` (and the logs an operator sends).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    // `--no-optional-locks`: status must not refresh and rewrite the
    // index, whose change would rerun this script (and rebuild the crate)
    // at the next build: the test command right after the first would
    // recompile velox-node for nothing (issue 28).
    let dirty = Command::new("git")
        .args([
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!(
        "cargo:rustc-env=VELOX_BUILD={commit}{} ({profile})",
        if dirty { "-dirty" } else { "" }
    );
    // Rebuild the stamp when HEAD moves (a commit or a checkout).
    for p in ["../.git/HEAD", "../.git/index"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
