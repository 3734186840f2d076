//! Pinned single-threaded reactors.

use std::future::Future;
use std::sync::OnceLock;
use std::thread::JoinHandle;

/// Which runtime a reactor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReactorFlavor {
    /// tokio-uring: io_uring underneath a tokio current-thread runtime.
    IoUring,
    /// A plain tokio current-thread runtime (epoll), for kernels or
    /// containers where io_uring is unavailable or disabled.
    Tokio,
}

impl ReactorFlavor {
    pub fn name(self) -> &'static str {
        match self {
            ReactorFlavor::IoUring => "io_uring",
            ReactorFlavor::Tokio => "tokio-current-thread",
        }
    }
}

/// Whether this process may create an io_uring instance. Probed once.
pub fn io_uring_available() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| match io_uring::IoUring::new(8) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "io_uring unavailable; reactors fall back to tokio current-thread");
            false
        }
    })
}

/// The flavor reactors get in this process: io_uring when the probe succeeds
/// and `VELOX_REACTOR` is not `tokio`.
pub fn default_flavor() -> ReactorFlavor {
    static FLAVOR: OnceLock<ReactorFlavor> = OnceLock::new();
    *FLAVOR.get_or_init(|| {
        let forced_tokio = std::env::var("VELOX_REACTOR")
            .map(|v| v == "tokio")
            .unwrap_or(false);
        let f = if !forced_tokio && io_uring_available() {
            ReactorFlavor::IoUring
        } else {
            ReactorFlavor::Tokio
        };
        tracing::info!(flavor = f.name(), forced_tokio, "reactor flavor chosen");
        f
    })
}

/// A running reactor thread.
pub struct ReactorHandle {
    pub name: String,
    pub core: Option<usize>,
    pub flavor: ReactorFlavor,
    thread: JoinHandle<()>,
}

impl ReactorHandle {
    pub fn join(self) -> std::thread::Result<()> {
        self.thread.join()
    }
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Starts a thread named `name`, pins it to `core` (when given and present),
/// and runs the future built by `make` to completion on a single-threaded
/// runtime of the process's flavor.
pub fn spawn_reactor<F, Fut>(
    name: &str,
    core: Option<usize>,
    make: F,
) -> std::io::Result<ReactorHandle>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    spawn_reactor_with(default_flavor(), name, core, make)
}

/// Like [`spawn_reactor`] with an explicit flavor. Socket tiles use
/// [`ReactorFlavor::Tokio`]: quinn does its UDP I/O through tokio's epoll
/// driver on either flavor, and under overload tokio-uring starved it until
/// QUIC connections timed out (docs/decisions/0003-net-tile-reactor.md).
pub fn spawn_reactor_with<F, Fut>(
    flavor: ReactorFlavor,
    name: &str,
    core: Option<usize>,
    make: F,
) -> std::io::Result<ReactorHandle>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let tname = name.to_string();
    let thread = std::thread::Builder::new()
        .name(tname.clone())
        .spawn(move || {
            if let Some(c) = core {
                let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: c });
                if !pinned {
                    tracing::warn!(reactor = %tname, core = c, "could not pin reactor to its core");
                }
            }
            match flavor {
                ReactorFlavor::IoUring => tokio_uring::start(make()),
                ReactorFlavor::Tokio => {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect(
                            "building a current-thread runtime cannot fail with default settings",
                        );
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, make());
                }
            }
        })?;
    Ok(ReactorHandle {
        name: name.to_string(),
        core,
        flavor,
        thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactor_runs_timers_and_local_tasks() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = spawn_reactor("test", Some(0), move || async move {
            let local = tokio::task::spawn_local(async { 41 });
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            tx.send(local.await.unwrap() + 1).unwrap();
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap(), 42);
        h.join().unwrap();
    }
}
