//! Data-path threads: every device queue and every TCP link session moves frames on an OS
//! thread of its own, off the async runtime, so a frame crosses the daemon on one thread
//! with no task hand-off or waker in between (the control plane, handshakes and UDP/QUIC
//! links stay on tokio). A thread blocks only in [`vnet_sys::wait`], which its [`Stop`] can
//! interrupt at any time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use vnet_sys::Waker;

/// The stop signal of one data-path thread, and its waker.
#[derive(Debug)]
pub struct Stop {
    stopped: AtomicBool,
    waker: Waker,
}

impl Stop {
    /// A new stop signal for a thread about to be spawned (made first when the thread's
    /// peers need its waker before it runs).
    pub fn new() -> std::io::Result<Arc<Stop>> {
        Ok(Arc::new(Stop {
            stopped: AtomicBool::new(false),
            waker: Waker::new()?,
        }))
    }

    /// True once the thread has been told to stop.
    pub fn is_set(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The waker the thread passes to [`vnet_sys::wait`]; firing it without stopping makes the
    /// thread look at its work again (a TCP session's queued output).
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    fn set(&self) {
        self.stopped.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A running data-path thread. Dropping the handle tells the thread to stop but does not
/// wait for it; [`DataThread::stop_and_join`] does.
#[derive(Debug)]
pub struct DataThread {
    stop: Arc<Stop>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl DataThread {
    /// Runs `body` on a new thread named `name`, stopped by `stop`; its result arrives on
    /// the receiver (which reports an error if the body panicked).
    pub fn spawn<R, F>(
        name: String,
        stop: Arc<Stop>,
        body: F,
    ) -> std::io::Result<(DataThread, oneshot::Receiver<R>)>
    where
        R: Send + 'static,
        F: FnOnce(&Stop) -> R + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let thread_stop = stop.clone();
        // Thread names are limited to 15 bytes by the kernel; the rest is cut there.
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            // The receiver may be gone (the session was aborted): nobody wants the result.
            let _ = done.send(body(&thread_stop));
        })?;
        Ok((
            DataThread {
                stop,
                handle: Some(handle),
            },
            result,
        ))
    }

    /// Tells the thread to stop and waits until it has: its descriptors are closed when
    /// this returns (a TAP can be opened again). The thread must not wait for anything the
    /// caller holds.
    pub fn stop_and_join(mut self) {
        self.stop.set();
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("a data-path thread panicked");
            }
        }
    }
}

impl Drop for DataThread {
    fn drop(&mut self) {
        self.stop.set();
    }
}

/// The thread name for `kind` and a port name, within the kernel's 15 bytes.
pub fn thread_name(kind: &str, port: &str) -> String {
    let mut name = format!("{kind}:{port}");
    if name.len() > 15 {
        let mut cut = 15;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_interrupts_a_blocked_wait_and_join_returns() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (waiting, waits) = std::sync::mpsc::channel();
        let (thread, result) = DataThread::spawn("test".into(), Stop::new().unwrap(), move |stop: &Stop| {
            waiting.send(()).unwrap();
            // Nothing ever arrives on `a`: only the stop can end this wait (the waker stays
            // fired, so a stop that comes before the wait starts ends it too).
            let ready = vnet_sys::wait(
                &a,
                vnet_sys::Interest {
                    read: true,
                    write: false,
                },
                stop.waker(),
                None,
            )
            .unwrap();
            (ready, stop.is_set())
        })
        .unwrap();
        waits.recv().unwrap();
        thread.stop_and_join();
        let (ready, stopped) = result.blocking_recv().unwrap();
        assert!(ready.woken && !ready.readable && stopped, "{ready:?}");
    }

    #[test]
    fn thread_names_fit_the_kernel_limit() {
        assert_eq!(thread_name("tap", "vm0"), "tap:vm0");
        assert_eq!(thread_name("tcp", "a-very-long-link-name").len(), 15);
        assert!(thread_name("tcp", "ééééééééééé").len() <= 15);
    }
}
