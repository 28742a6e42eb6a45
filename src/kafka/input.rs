//! Input messages in batches.
//!
//! rust-rdkafka's `poll` hands out one message per call, each wrapped in its own
//! event, reference-counted on the heap, with a clock read: about a third of the
//! daemon's per-event cost. Here every assigned partition's fetch queue is forwarded
//! to one application queue, read with `rd_kafka_consume_batch_queue` (up to [`BATCH`]
//! messages per call). Rebalances, statistics and errors stay on the consumer's own
//! queue, served by `BaseConsumer::poll` between batches (the batch call must not see
//! a rebalance: served there, librdkafka would answer it with a forced unassign).
//!
//! librdkafka discards messages made stale by a seek or a revocation when they are
//! dequeued; messages already taken into a [`Batch`] are the caller's to drop (see
//! [`Batch::clear`]).

use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Most messages taken per call.
pub const BATCH: usize = 1024;

/// Set when the queue gets a message while empty (librdkafka's queue event callback,
/// on one of its threads); the poll loop waits on it when idle.
#[derive(Default)]
struct Wake {
    ready: Mutex<bool>,
    cv: Condvar,
}

unsafe extern "C" fn on_enqueue(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Wake` of a live `InputQueue`; the callback is disabled
    // before it is dropped (see `close`).
    let wake = unsafe { &*(opaque as *const Wake) };
    *wake.ready.lock().unwrap_or_else(|p| p.into_inner()) = true;
    wake.cv.notify_one();
}

/// The application's input queue, which assigned partitions' fetch queues forward to.
/// Must be closed before the consumer is dropped (librdkafka cannot shut a client down
/// while messages of it are held).
pub struct InputQueue {
    /// None once closed.
    queue: Mutex<Option<NonNull<rd::rd_kafka_queue_t>>>,
    rk: NonNull<rd::rd_kafka_t>,
    wake: Box<Wake>,
}

// SAFETY: librdkafka queue and client handles are thread-safe; `rk` is the consumer's
// client handle, alive as long as the consumer, which outlives this queue (see
// `close`); the queue handle is destroyed once, under the mutex.
unsafe impl Send for InputQueue {}
unsafe impl Sync for InputQueue {}

/// One message of a batch, borrowed from librdkafka.
#[derive(Clone, Copy)]
pub struct In<'a> {
    pub partition: i32,
    pub offset: i64,
    pub payload: &'a [u8],
    pub key: Option<&'a [u8]>,
    /// A consume error reported in place of a message (`RD_KAFKA_RESP_ERR_NO_ERROR`
    /// for a message).
    pub err: rd::rd_kafka_resp_err_t,
}

/// Messages taken by one call; destroyed by `clear` or on drop.
pub struct Batch {
    msgs: Vec<*mut rd::rd_kafka_message_t>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            msgs: Vec::with_capacity(BATCH),
        }
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The `i`-th message.
    pub fn get(&self, i: usize) -> In<'_> {
        // SAFETY: the pointer came from rd_kafka_consume_batch_queue and is not
        // destroyed before `clear`, which needs `&mut self`.
        let m = unsafe { &*self.msgs[i] };
        let bytes = |p: *mut c_void, len: usize| -> Option<&[u8]> {
            // SAFETY: librdkafka's payload and key buffers live as long as the message.
            (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p as *const u8, len) })
        };
        In {
            partition: m.partition,
            offset: m.offset,
            payload: bytes(m.payload, m.len).unwrap_or_default(),
            key: bytes(m.key, m.key_len),
            err: m.err,
        }
    }

    /// Destroys every message of the batch (also those not handled yet: after a
    /// rollback they are stale).
    pub fn clear(&mut self) {
        for m in self.msgs.drain(..) {
            // SAFETY: each message is destroyed exactly once.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.clear();
    }
}

impl InputQueue {
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> InputQueue {
        let rk = consumer.client().native_ptr();
        let wake = Box::<Wake>::default();
        // SAFETY: rk is a live client; the callback's opaque is the boxed Wake, which
        // lives (at a fixed address) until the callback is disabled.
        let queue = unsafe {
            NonNull::new(rd::rd_kafka_queue_new(rk)).inspect(|q| {
                rd::rd_kafka_queue_cb_event_enable(
                    q.as_ptr(),
                    Some(on_enqueue),
                    &*wake as *const Wake as *mut c_void,
                );
            })
        };
        InputQueue {
            queue: Mutex::new(queue),
            rk: NonNull::new(rk).expect("client handle"),
            wake,
        }
    }

    /// Sends `topic`/`partition`'s messages to this queue. Call before the partition
    /// is assigned, so that no message takes the consumer's queue.
    pub fn attach(&self, topic: &str, partition: i32) {
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(q), Ok(topic)) = (*guard, CString::new(topic)) else {
            return;
        };
        // SAFETY: live handles; the partition queue handle is released right away (the
        // forwarding stays with the partition).
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(self.rk.as_ptr(), topic.as_ptr(), partition);
            if !pq.is_null() {
                rd::rd_kafka_queue_forward(pq, q.as_ptr());
                rd::rd_kafka_queue_destroy(pq);
            }
        }
    }

    /// Takes up to [`BATCH`] messages into `batch` (cleared first), without waiting;
    /// returns how many. (Given a timeout, `rd_kafka_consume_batch_queue` waits until
    /// the batch is full: an idle loop waits with [`InputQueue::wait`] instead.)
    pub fn poll(&self, batch: &mut Batch) -> usize {
        batch.clear();
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = *guard else { return 0 };
        batch.msgs.resize(BATCH, std::ptr::null_mut());
        // SAFETY: the array has room for BATCH pointers; librdkafka fills the first n.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(q.as_ptr(), 0, batch.msgs.as_mut_ptr(), BATCH)
        };
        batch.msgs.truncate(n.max(0) as usize);
        batch.msgs.len()
    }

    /// Waits up to `timeout` for a message to arrive while the queue is empty
    /// (returns at once if one arrived since the last wait).
    pub fn wait(&self, timeout: Duration) {
        let mut ready = self.wake.ready.lock().unwrap_or_else(|p| p.into_inner());
        if !*ready {
            ready = self
                .wake
                .cv
                .wait_timeout(ready, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *ready = false;
    }

    /// Destroys the messages still queued and the queue. Idempotent.
    pub fn close(&self) {
        let mut guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = guard.take() else { return };
        let mut msgs = vec![std::ptr::null_mut(); BATCH];
        // SAFETY: as in `poll`; afterwards the handle is destroyed exactly once, its
        // callback disabled first.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(q.as_ptr(), None, std::ptr::null_mut());
            loop {
                let n = rd::rd_kafka_consume_batch_queue(q.as_ptr(), 0, msgs.as_mut_ptr(), BATCH);
                if n <= 0 {
                    break;
                }
                for m in &msgs[..n as usize] {
                    rd::rd_kafka_message_destroy(*m);
                }
            }
            rd::rd_kafka_queue_destroy(q.as_ptr());
        }
    }
}

impl Drop for InputQueue {
    fn drop(&mut self) {
        self.close();
    }
}
