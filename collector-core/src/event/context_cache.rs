//! One rendering of the process context used last, kept per thread.
//!
//! In a storm one process's events follow each other and share one context: the kernel
//! sources and the IPC decoder hand out one `Arc` per process. Its JSON (`json.rs`) and
//! its protobuf body (`ipc/wire/encode.rs`) are then made once and copied, not made
//! again for every event. Each rendering has its own thread-local [`Slot`].
//!
//! The slot holds the `Arc`, so no other context can take its address while it is
//! cached, and a context is never changed behind a shared `Arc`: a pointer comparison
//! is enough.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

use super::ProcessContext;

/// The context rendered last on this thread, and its bytes.
pub(crate) type Slot = RefCell<Option<(Arc<ProcessContext>, Vec<u8>)>>;

/// Runs `f` on what `render` writes for `c`: the bytes in `slot` when `c` is the context
/// rendered there last, otherwise rendered now and kept there. A slot that is busy
/// (re-entered) or gone (the thread is exiting) is passed by: rendered afresh.
#[inline]
pub(crate) fn with_rendered<R>(
    slot: &'static LocalKey<Slot>,
    c: &Arc<ProcessContext>,
    render: impl Fn(&mut Vec<u8>),
    mut f: impl FnMut(&[u8]) -> R,
) -> R {
    let cached = slot.try_with(|cell| {
        let mut last = cell.try_borrow_mut().ok()?;
        match &mut *last {
            Some((cached, _)) if Arc::ptr_eq(cached, c) => {}
            Some((cached, bytes)) => {
                bytes.clear();
                render(bytes);
                *cached = c.clone();
            }
            none => {
                let mut bytes = Vec::new();
                render(&mut bytes);
                *none = Some((c.clone(), bytes));
            }
        }
        last.as_ref().map(|(_, bytes)| f(bytes))
    });
    if let Ok(Some(r)) = cached {
        return r;
    }
    let mut bytes = Vec::new();
    render(&mut bytes);
    f(&bytes)
}
