//! Input messages in batches.
//!
//! rust-rdkafka's `poll` hands out one message per call, each wrapped in its own
//! event, reference-counted on the heap, with a clock read: about a third of the
//! daemon's per-event cost. Here every assigned partition's fetch queue is forwarded
//! to one queue of the application's, read with `rd_kafka_consume_batch_queue` (up to
//! [`BATCH`] messages per call, one wake-up). Rebalances, statistics and errors stay
//! on the consumer's own queue, served by `BaseConsumer::poll` between batches (the
//! batch call must not see a rebalance: served there, librdkafka would answer it with
//! a forced unassign).
//!
//! librdkafka discards messages made stale by a seek or a revocation when they are
//! dequeued; messages already taken into a [`Batch`] are the caller's to drop (see
//! [`Batch::clear`]).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Most messages taken per call.
pub const BATCH: usize = 1024;

struct Queue(NonNull<rd::rd_kafka_queue_t>);
// SAFETY: librdkafka queues are thread-safe; the handle is only destroyed once, under
// the mutex of `InputQueue`.
unsafe impl Send for Queue {}

/// The application's input queue. Must be closed before the consumer is dropped
/// (librdkafka cannot shut a client down while messages of it are held).
pub struct InputQueue {
    queue: Mutex<Option<Queue>>,
    rk: NonNull<rd::rd_kafka_t>,
}

// SAFETY: `rk` is the consumer's client handle, thread-safe in librdkafka and alive as
// long as the consumer, which outlives this queue (see `close`).
unsafe impl Send for InputQueue {}
unsafe impl Sync for InputQueue {}

/// One message of a batch, borrowed from librdkafka.
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

// SAFETY: messages are owned by the batch until destroyed, and librdkafka allows them
// to be destroyed on any thread.
unsafe impl Send for Batch {}

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
        let bytes = |p: *mut std::ffi::c_void, len: usize| -> Option<&[u8]> {
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
        // SAFETY: rk is a live client; rd_kafka_queue_new never returns NULL.
        let q = unsafe { rd::rd_kafka_queue_new(rk) };
        InputQueue {
            queue: Mutex::new(NonNull::new(q).map(Queue)),
            rk: NonNull::new(rk).expect("client handle"),
        }
    }

    /// Sends `topic`/`partition`'s messages to this queue. Call before the partition
    /// is assigned, so that no message takes the consumer's queue.
    pub fn attach(&self, topic: &str, partition: i32) {
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = guard.as_ref() else { return };
        let Ok(topic) = CString::new(topic) else {
            return;
        };
        // SAFETY: live handles; the partition queue handle is released right away (the
        // forwarding stays with the partition).
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(self.rk.as_ptr(), topic.as_ptr(), partition);
            if !pq.is_null() {
                rd::rd_kafka_queue_forward(pq, q.0.as_ptr());
                rd::rd_kafka_queue_destroy(pq);
            }
        }
    }

    /// Takes up to [`BATCH`] messages into `batch` (cleared first), waiting up to
    /// `timeout` for the first.
    pub fn poll(&self, timeout: Duration, batch: &mut Batch) -> usize {
        batch.clear();
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = guard.as_ref() else { return 0 };
        batch.msgs.resize(BATCH, std::ptr::null_mut());
        // SAFETY: the array has room for BATCH pointers; librdkafka fills the first n.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                q.0.as_ptr(),
                timeout.as_millis().min(i32::MAX as u128) as i32,
                batch.msgs.as_mut_ptr(),
                BATCH,
            )
        };
        let n = n.max(0) as usize;
        batch.msgs.truncate(n);
        n
    }

    /// Destroys the messages still queued and the queue. Idempotent.
    pub fn close(&self) {
        let mut guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = guard.take() else { return };
        let mut msgs = vec![std::ptr::null_mut(); BATCH];
        // SAFETY: as in `poll`; afterwards the handle is destroyed exactly once.
        unsafe {
            loop {
                let n = rd::rd_kafka_consume_batch_queue(q.0.as_ptr(), 0, msgs.as_mut_ptr(), BATCH);
                if n <= 0 {
                    break;
                }
                for m in &msgs[..n as usize] {
                    rd::rd_kafka_message_destroy(*m);
                }
            }
            rd::rd_kafka_queue_destroy(q.0.as_ptr());
        }
    }
}

impl Drop for InputQueue {
    fn drop(&mut self) {
        self.close();
    }
}
