//! The one tokio runtime, and how results get back to asyncio.
//!
//! A tokio task never takes the GIL to finish an awaitable. It pushes the
//! finished asyncio future and a [`Deliver`] value onto its loop's
//! [`Completer`] queue; when the queue goes from empty to non-empty it writes
//! one byte to a socket the event loop watches (`loop.add_reader`). The loop
//! thread then drains the whole queue in one callback, converting values to
//! Python objects while it holds the GIL anyway. Under load many completions
//! share one wakeup; tokio workers never contend for the GIL.

use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use natsbus_core::{Error, ErrorKind};

use crate::errors::to_pyerr;

/// How many times this process has been forked into a child (counted in
/// the child by a `pthread_atfork` handler). A runtime, a bus and its
/// messages belong to the generation they were made in: a forked child has
/// none of the parent's threads, so the parent's runtime can run nothing
/// there and its connections are the parent's sockets.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The current runtime and the generation it belongs to.
struct Current {
    generation: u64,
    runtime: &'static tokio::runtime::Runtime,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
/// Fast path: the runtime of `FAST_GEN`, set once it exists.
static FAST: AtomicPtr<tokio::runtime::Runtime> = AtomicPtr::new(std::ptr::null_mut());
static FAST_GEN: AtomicU64 = AtomicU64::new(u64::MAX);

#[cfg(unix)]
extern "C" fn in_forked_child() {
    // Async-signal-safe: one atomic add. The next runtime() builds anew.
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Register the fork handler (once, at module import).
pub fn configure() {
    #[cfg(unix)]
    {
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| {
            // SAFETY: registers a handler that only does an atomic add.
            unsafe {
                libc::pthread_atfork(None, None, Some(in_forked_child));
            }
        });
    }
}

/// This process's fork generation (see [`GENERATION`]).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Tokio workers: `$NATSBUS_WORKER_THREADS`, else half the cores, 1 to 4.
/// The Python thread needs a core of its own, and fewer workers mean fewer
/// cross-thread wakeups per message (measured with bench/: on 2 cores one
/// worker beats two on every workload).
fn workers() -> usize {
    std::env::var("NATSBUS_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            (cores / 2).clamp(1, 4)
        })
}

/// The shared runtime of this process, built on first use, and built anew
/// in a forked child (the parent's is left alone: its threads do not exist
/// here, and dropping it would wait for them).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    let generation = GENERATION.load(Ordering::Acquire);
    if FAST_GEN.load(Ordering::Acquire) == generation {
        let rt = FAST.load(Ordering::Acquire);
        if !rt.is_null() {
            // SAFETY: runtimes are leaked, never freed.
            return unsafe { &*rt };
        }
    }
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = current.as_ref().filter(|c| c.generation == generation) {
        return c.runtime;
    }
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers())
            .thread_name("natsbus-tokio")
            .enable_all()
            .build()
            .expect("natsbus: cannot start the tokio runtime"),
    ));
    *current = Some(Current {
        generation,
        runtime,
    });
    FAST.store(std::ptr::from_ref(runtime).cast_mut(), Ordering::Release);
    FAST_GEN.store(generation, Ordering::Release);
    runtime
}

/// The error for using, in a forked child, what the parent made.
pub fn forked_error(what: &str) -> Error {
    Error::new(
        ErrorKind::Closed,
        format!(
            "{what} was created before this process forked; a forked child cannot use the \
             parent's connections: connect again in the child (natsbus.connect(...) after fork)"
        ),
    )
}

/// Holds a value made by the runtime (a client, a channel, a task handle)
/// and leaks it instead of dropping it in a forked child: dropping it there
/// could wake the parent's runtime, whose threads and locks the child does
/// not have.
pub struct ForkSafe<T> {
    inner: std::mem::ManuallyDrop<T>,
    generation: u64,
}

impl<T> ForkSafe<T> {
    pub fn new(value: T) -> Self {
        ForkSafe {
            inner: std::mem::ManuallyDrop::new(value),
            generation: generation(),
        }
    }

    /// Whether this value was made in this process (not inherited by fork).
    pub fn is_current(&self) -> bool {
        self.generation == generation()
    }
}

impl<T> std::ops::Deref for ForkSafe<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Drop for ForkSafe<T> {
    fn drop(&mut self) {
        if self.is_current() {
            // SAFETY: dropped once, here.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.inner) };
        }
    }
}

/// A value produced on the runtime, turned into Python on the loop thread.
pub trait Deliver: Send + 'static {
    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>>;
    /// Called instead of `into_py` when the awaiting future was cancelled,
    /// so values that must not be lost (messages) can be put back.
    fn cancelled(self: Box<Self>) {}
}

impl Deliver for () {
    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py.None())
    }
}

/// Wraps a closure as a [`Deliver`].
pub struct WithPy<F>(pub F);

impl<F> Deliver for WithPy<F>
where
    F: FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send + 'static,
{
    fn into_py(self: Box<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        (self.0)(py)
    }
}

static RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

type Completion = (Py<PyAny>, Result<Box<dyn Deliver>, Error>);

/// Per event loop: the queue of finished futures and the wakeup channel.
pub struct Completer {
    queue: Mutex<Vec<Completion>>,
    event_loop: Py<PyAny>,
    /// The thread the loop runs in (where the completer was made).
    loop_thread: std::thread::ThreadId,
    #[cfg(unix)]
    wake_tx: std::os::unix::net::UnixStream,
    #[cfg(unix)]
    wake_rx: std::os::unix::net::UnixStream,
    drain_cb: PyOnceLock<Py<PyAny>>,
    /// Set once the loop no longer watches our socket (bus closed): late
    /// completions then wake the loop with `call_soon_threadsafe`.
    detached: std::sync::atomic::AtomicBool,
}

#[pyclass(frozen, module = "natsbus._natsbus")]
pub struct DrainCallback {
    completer: Arc<Completer>,
}

#[pymethods]
impl DrainCallback {
    fn __call__(&self, py: Python<'_>) {
        self.completer.drain(py);
    }
}

impl Completer {
    /// Create a completer bound to the running event loop.
    pub fn for_running_loop(py: Python<'_>) -> PyResult<Arc<Completer>> {
        let asyncio = py.import("asyncio")?;
        let event_loop = asyncio.call_method0("get_running_loop")?;
        #[cfg(unix)]
        {
            let (wake_tx, wake_rx) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
            wake_tx
                .set_nonblocking(true)
                .and_then(|_| wake_rx.set_nonblocking(true))
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
            let completer = Arc::new(Completer {
                queue: Mutex::new(Vec::new()),
                event_loop: event_loop.clone().unbind(),
                loop_thread: std::thread::current().id(),
                wake_tx,
                wake_rx,
                drain_cb: PyOnceLock::new(),
                detached: std::sync::atomic::AtomicBool::new(false),
            });
            let cb = Py::new(
                py,
                DrainCallback {
                    completer: completer.clone(),
                },
            )?;
            use std::os::fd::AsRawFd;
            event_loop.call_method1(
                "add_reader",
                (completer.wake_rx.as_raw_fd(), cb.clone_ref(py)),
            )?;
            let _ = completer.drain_cb.set(py, cb.into_any());
            Ok(completer)
        }
        #[cfg(not(unix))]
        {
            let completer = Arc::new(Completer {
                queue: Mutex::new(Vec::new()),
                event_loop: event_loop.clone().unbind(),
                loop_thread: std::thread::current().id(),
                drain_cb: PyOnceLock::new(),
                detached: std::sync::atomic::AtomicBool::new(true),
            });
            let cb = Py::new(
                py,
                DrainCallback {
                    completer: completer.clone(),
                },
            )?;
            let _ = completer.drain_cb.set(py, cb.into_any());
            Ok(completer)
        }
    }

    pub fn event_loop(&self) -> &Py<PyAny> {
        &self.event_loop
    }

    /// Stop watching the wakeup socket (the bus is closed).
    pub fn detach(&self, py: Python<'_>) {
        if self
            .detached
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let _ = self
                .event_loop
                .bind(py)
                .call_method1("remove_reader", (self.wake_rx.as_raw_fd(),));
        }
        // Finish whatever is still queued so no awaiting task hangs.
        self.drain(py);
    }

    /// A new asyncio future on this loop. Refuses, with a message that says
    /// what to do, when called from another running loop (a bus made in
    /// one `asyncio.run` and used in the next, a session-scoped fixture).
    pub fn new_future(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if !self.running_here(py)? && std::thread::current().id() != self.loop_thread {
            // A future made here would belong to a loop this thread does not
            // run: awaiting it is impossible, and dropping it loses the work.
            return Err(crate::errors::to_pyerr(
                py,
                &natsbus_core::Error::invalid(
                    "this thread runs no event loop: call natsbus from the event loop that \
                     connected the bus (from another thread, schedule a coroutine on that loop \
                     with asyncio.run_coroutine_threadsafe)",
                ),
            ));
        }
        self.create_future(py)
    }

    /// True when called from this completer's running loop, false when no
    /// loop runs in this thread; an error when another loop runs here.
    pub fn running_here(&self, py: Python<'_>) -> PyResult<bool> {
        let running = RUNNING_LOOP
            .get_or_try_init(py, || {
                py.import("asyncio")?
                    .getattr("_get_running_loop")
                    .map(Bound::unbind)
            })?
            .bind(py)
            .call0()?;
        if running.is_none() {
            return Ok(false);
        }
        if !running.is(self.event_loop.bind(py)) {
            return Err(crate::errors::to_pyerr(
                py,
                &natsbus_core::Error::invalid(
                    "this bus belongs to another event loop: connect inside the event loop \
                     that uses it (a bus cannot move between asyncio.run() calls)",
                ),
            ));
        }
        Ok(true)
    }

    /// True when called on the loop's thread while the loop runs: then the
    /// caller is a task or callback of this loop. Cheaper than
    /// [`running_here`](Self::running_here) (no `getpid()`), and never an error.
    pub fn in_loop(&self, py: Python<'_>) -> bool {
        std::thread::current().id() == self.loop_thread
            && self
                .event_loop
                .bind(py)
                .call_method0(pyo3::intern!(py, "is_running"))
                .and_then(|r| r.is_truthy())
                .unwrap_or(false)
    }

    /// A new asyncio future on this loop, without checking the caller's loop.
    pub fn create_future(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .event_loop
            .bind(py)
            .call_method0(pyo3::intern!(py, "create_future"))?
            .unbind())
    }

    /// Queue a completion; wake the loop if the queue was empty.
    pub fn complete(&self, fut: Py<PyAny>, result: Result<Box<dyn Deliver>, Error>) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = q.is_empty();
            q.push((fut, result));
            was_empty
        };
        if was_empty {
            self.wake();
        }
    }

    fn wake(&self) {
        #[cfg(unix)]
        if !self.detached.load(std::sync::atomic::Ordering::Acquire) {
            use std::io::Write;
            // A full socket buffer already means "wake up"; nothing to do then.
            let _ = (&self.wake_tx).write(&[1u8]);
            return;
        }
        // No reader on the loop: schedule the drain the slow way. A closed
        // loop refuses, and then nobody is waiting anyway; neither is anyone
        // once the interpreter is shutting down (a late completion at exit).
        Python::try_attach(|py| {
            if let Some(cb) = self.drain_cb.get(py) {
                let _ = self
                    .event_loop
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (cb.clone_ref(py),));
            }
        });
    }

    /// On the loop thread: resolve every queued future.
    pub fn drain(&self, py: Python<'_>) {
        #[cfg(unix)]
        {
            use std::io::Read;
            // Read the wakeup bytes BEFORE taking the queue: a completion
            // pushed after the take writes a new byte and gets its own drain.
            let mut sink = [0u8; 256];
            while let Ok(n) = (&self.wake_rx).read(&mut sink) {
                if n < sink.len() {
                    break;
                }
            }
        }
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for (fut, result) in batch {
            let f = fut.bind(py);
            // A panic while turning one value into Python fails that future
            // alone; the rest of the batch still resolves.
            if let Err(panic) =
                std::panic::catch_unwind(AssertUnwindSafe(|| resolve(py, f, result)))
            {
                let e = Error::internal("resolving an awaitable on the event loop", &*panic);
                set_outcome(py, f, Err(to_pyerr(py, &e)));
            }
        }
    }

    /// Run `work` on the runtime; the returned asyncio future resolves with
    /// its value on this loop. A panic in `work` resolves it with an
    /// internal `NatsbusError` naming where the work was started.
    #[track_caller]
    pub fn spawn<F, D>(self: &Arc<Self>, py: Python<'_>, work: F) -> PyResult<Py<PyAny>>
    where
        F: Future<Output = Result<D, Error>> + Send + 'static,
        D: Deliver,
    {
        let location = Location::caller();
        let fut = self.new_future(py)?;
        let handle = fut.clone_ref(py);
        let completer = self.clone();
        runtime().spawn(async move {
            let r = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(r) => r.map(|d| Box::new(d) as Box<dyn Deliver>),
                Err(panic) => Err(Error::internal(location, &*panic)),
            };
            completer.complete(handle, r);
        });
        Ok(fut)
    }
}

fn resolve(py: Python<'_>, fut: &Bound<'_, PyAny>, result: Result<Box<dyn Deliver>, Error>) {
    let done = fut
        .call_method0(pyo3::intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true);
    if done {
        // Cancelled while we worked: give values back instead of dropping them.
        if let Ok(d) = result {
            d.cancelled();
        }
        return;
    }
    let outcome = match result {
        Ok(d) => d.into_py(py),
        Err(e) => Err(to_pyerr(py, &e)),
    };
    set_outcome(py, fut, outcome);
}

/// Finish an asyncio future with a value or an exception. A future that is
/// done already (the caller cancelled it) is left alone; any other failure
/// to set it is reported as unraisable.
pub fn set_outcome(py: Python<'_>, fut: &Bound<'_, PyAny>, outcome: PyResult<Py<PyAny>>) {
    let set = match outcome {
        Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
    };
    if let Err(e) = set {
        let done = fut
            .call_method0(pyo3::intern!(py, "done"))
            .and_then(|d| d.is_truthy())
            .unwrap_or(false);
        if !done {
            e.write_unraisable(py, Some(fut));
        }
    }
}

/// Sets a flag when the asyncio future it is attached to ends cancelled.
#[pyclass(frozen, module = "natsbus._natsbus")]
pub struct OnCancel {
    flag: Arc<std::sync::atomic::AtomicBool>,
}

#[pymethods]
impl OnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) {
        let cancelled = fut
            .call_method0(pyo3::intern!(fut.py(), "cancelled"))
            .and_then(|c| c.is_truthy())
            .unwrap_or(false);
        if cancelled {
            self.flag.store(true, Ordering::Release);
        }
    }
}

/// Set `flag` when `fut` is cancelled (so work on the runtime can stop).
pub fn on_cancel(
    py: Python<'_>,
    fut: &Py<PyAny>,
    flag: Arc<std::sync::atomic::AtomicBool>,
) -> PyResult<()> {
    fut.bind(py)
        .call_method1("add_done_callback", (Py::new(py, OnCancel { flag })?,))?;
    Ok(())
}

/// An awaitable that is already finished with `None`: what `await msg.ack()`
/// returns, so queuing an ack costs no event-loop round trip.
#[pyclass(frozen, module = "natsbus._natsbus")]
pub struct Ready;

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __next__(&self) -> Option<Py<PyAny>> {
        None
    }
    fn __repr__(&self) -> &'static str {
        "<natsbus ready awaitable>"
    }
}

static READY: PyOnceLock<Py<Ready>> = PyOnceLock::new();

/// The shared finished awaitable.
pub fn ready(py: Python<'_>) -> PyResult<Py<Ready>> {
    READY
        .get_or_try_init(py, || Py::new(py, Ready))
        .map(|r| r.clone_ref(py))
}
