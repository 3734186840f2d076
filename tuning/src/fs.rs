//! Host access: every read of `/proc` and `/sys` (and every tuning write)
//! goes through [`HostFs`], so stages and topology parsing run unchanged on
//! captured fixture trees in tests.
//!
//! Paths are relative to the host root and written without the leading
//! slash (`"proc/meminfo"`); a leading slash is accepted and ignored.

use std::io;
use std::path::{Path, PathBuf};

/// The locked-memory limit of the calling process (RLIMIT_MEMLOCK), in bytes.
/// `None` means unlimited (RLIM_INFINITY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemlockLimit {
    /// Soft limit: what `mlock` and io_uring accounting enforce.
    pub soft_bytes: Option<u64>,
    /// Hard limit: the ceiling an unprivileged process may raise `soft` to.
    pub hard_bytes: Option<u64>,
}

/// Read access to a host's `/proc` and `/sys` (and the few process-level
/// facts that are not files), plus the writes `apply` performs.
pub trait HostFs {
    /// Whole contents of the file at `path` (relative to the root).
    fn read(&self, path: &str) -> io::Result<String>;

    /// Entry names in directory `path`, sorted.
    fn list(&self, path: &str) -> io::Result<Vec<String>>;

    /// Target of the symbolic link at `path`.
    fn read_link(&self, path: &str) -> io::Result<String>;

    /// Replace the contents of an existing file (a sysctl or sysfs knob).
    /// Never creates files: a missing knob is an error, as on a real host.
    fn write(&self, path: &str, contents: &str) -> io::Result<()>;

    /// RLIMIT_MEMLOCK of the process. The default parses
    /// `proc/self/limits`, which is what a fixture captures.
    fn memlock_limit(&self) -> io::Result<MemlockLimit> {
        let text = self.read("proc/self/limits")?;
        crate::parse::memlock_from_limits(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no \"Max locked memory\" line in proc/self/limits",
            )
        })
    }

    /// Set RLIMIT_MEMLOCK of the process. The default rewrites the
    /// `Max locked memory` line of `proc/self/limits` (fixture hosts).
    fn set_memlock_limit(&self, limit: MemlockLimit) -> io::Result<()> {
        let text = self.read("proc/self/limits")?;
        let out = crate::parse::limits_with_memlock(&text, limit);
        self.write("proc/self/limits", &out)
    }

    /// Probe io_uring with the raw `io_uring_setup` syscall: `Some(Ok(()))`
    /// if a ring could be created, `Some(Err(errno))` if the kernel refused,
    /// `None` if this host cannot be probed (fixtures without a recorded
    /// result).
    fn probe_io_uring(&self) -> Option<Result<(), i32>> {
        None
    }
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// A host rooted at a directory: captured fixtures in tests, or a copy of
/// one in a temp dir for `apply` tests (writes land in files there).
///
/// Fixture trees cannot always hold real symlinks (a `device` link into
/// `/sys/devices`), so [`HostFs::read_link`] also accepts a directory at
/// the link's path that contains a `.link` file with the target text.
#[derive(Clone, Debug)]
pub struct DirFs {
    root: PathBuf,
    io_uring: Option<Result<(), i32>>,
}

impl DirFs {
    /// A host whose `/` is `root`. io_uring is "not probed" until
    /// [`DirFs::with_io_uring_probe`] records a result.
    pub fn new(root: impl Into<PathBuf>) -> DirFs {
        DirFs {
            root: root.into(),
            io_uring: None,
        }
    }

    /// Record what an `io_uring_setup` probe returns on this host.
    pub fn with_io_uring_probe(mut self, result: Result<(), i32>) -> DirFs {
        self.io_uring = Some(result);
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(rel(path))
    }
}

impl HostFs for DirFs {
    fn read(&self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(self.path(path))
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.path(path))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            // Fixture bookkeeping (`.link`, `.keep`); /proc and /sys have no dotfiles.
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn read_link(&self, path: &str) -> io::Result<String> {
        let p = self.path(path);
        match std::fs::read_link(&p) {
            Ok(target) => Ok(target.to_string_lossy().into_owned()),
            Err(_) => Ok(std::fs::read_to_string(p.join(".link"))?.trim().to_string()),
        }
    }

    fn write(&self, path: &str, contents: &str) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(path))?;
        f.write_all(contents.as_bytes())
    }

    fn probe_io_uring(&self) -> Option<Result<(), i32>> {
        self.io_uring
    }
}

/// The running host (root `/`): files through [`DirFs`], RLIMIT_MEMLOCK
/// through `getrlimit`/`setrlimit`, io_uring through a real probe.
#[derive(Clone, Debug)]
pub struct RealFs {
    dir: DirFs,
}

impl RealFs {
    /// The running host.
    pub fn new() -> RealFs {
        RealFs {
            dir: DirFs::new("/"),
        }
    }
}

impl Default for RealFs {
    fn default() -> RealFs {
        RealFs::new()
    }
}

impl HostFs for RealFs {
    fn read(&self, path: &str) -> io::Result<String> {
        self.dir.read(path)
    }
    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        self.dir.list(path)
    }
    fn read_link(&self, path: &str) -> io::Result<String> {
        std::fs::read_link(self.dir.path(path)).map(|t| t.to_string_lossy().into_owned())
    }
    fn write(&self, path: &str, contents: &str) -> io::Result<()> {
        self.dir.write(path, contents)
    }
    fn memlock_limit(&self) -> io::Result<MemlockLimit> {
        sys::getrlimit_memlock()
    }
    fn set_memlock_limit(&self, limit: MemlockLimit) -> io::Result<()> {
        sys::setrlimit_memlock(limit)
    }
    fn probe_io_uring(&self) -> Option<Result<(), i32>> {
        Some(sys::probe_io_uring())
    }
}

/// The three system calls this crate makes.
///
/// STYLE.md §7 keeps `unsafe` in `io` and the rings; this module is the
/// exception, because a host check must ask the kernel directly and the
/// tuning crate does not depend on `io`. Each call is a plain FFI call with
/// a stack-owned out-parameter; no pointer outlives the call.
mod sys {
    use super::MemlockLimit;
    use std::io;

    fn from_rlim(v: libc::rlim_t) -> Option<u64> {
        if v == libc::RLIM_INFINITY {
            None
        } else {
            Some(v)
        }
    }

    fn to_rlim(v: Option<u64>) -> libc::rlim_t {
        match v {
            None => libc::RLIM_INFINITY,
            Some(b) => b,
        }
    }

    pub fn getrlimit_memlock() -> io::Result<MemlockLimit> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit that lives across the call.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(MemlockLimit {
            soft_bytes: from_rlim(lim.rlim_cur),
            hard_bytes: from_rlim(lim.rlim_max),
        })
    }

    pub fn setrlimit_memlock(limit: MemlockLimit) -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: to_rlim(limit.soft_bytes),
            rlim_max: to_rlim(limit.hard_bytes),
        };
        // SAFETY: `lim` is a valid rlimit read by the kernel during the call.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `struct io_uring_params` is 120 bytes; the kernel reads the flags
    /// and fills in the rest, so zeroed bytes request a default ring.
    const IO_URING_PARAMS_BYTES: usize = 120;

    /// Entries of the probe ring: the smallest useful size.
    const PROBE_RING_ENTRIES: libc::c_long = 4;

    pub fn probe_io_uring() -> Result<(), i32> {
        let mut params = [0u64; IO_URING_PARAMS_BYTES / 8];
        // SAFETY: io_uring_setup(entries, params) reads and writes exactly
        // `sizeof(struct io_uring_params)` bytes at `params`, which is a
        // zeroed, 8-aligned, stack-owned buffer of that size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                PROBE_RING_ENTRIES,
                params.as_mut_ptr(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // SAFETY: `fd` is a file descriptor this function just opened and owns.
        unsafe { libc::close(fd as libc::c_int) };
        Ok(())
    }
}
