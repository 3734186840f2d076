//! Fixture helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use velox_tuning::DirFs;

/// This crate's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a
/// test too; the runtime value wins over the compiled-in one, which is
/// wrong when a shared target directory holds a binary built from another
/// checkout of the same sources (cargo reuses it).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `tests/fixtures/NAME`.
pub fn fixture_dir(name: &str) -> PathBuf {
    manifest_dir().join("tests/fixtures").join(name)
}

/// A read-only host over a fixture.
pub fn fixture(name: &str) -> DirFs {
    DirFs::new(fixture_dir(name))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A writable copy of a fixture in a temp dir (kept alive by the guard).
pub fn writable(name: &str) -> (tempfile::TempDir, DirFs) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture_dir(name), dir.path());
    let fs = DirFs::new(dir.path());
    (dir, fs)
}

/// Overwrite a file of a writable fixture.
pub fn set(fs: &DirFs, path: &str, text: &str) {
    std::fs::write(fs.root().join(path), text).unwrap();
}

/// Read a file of a fixture.
pub fn get(fs: &DirFs, path: &str) -> String {
    std::fs::read_to_string(fs.root().join(path)).unwrap()
}
