//! The JSON access log: one line per request on stdout, written by a thread of its own so a
//! slow stdout never blocks a request. Lines are dropped (and counted) rather than queued
//! without bound when the writer falls behind.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use serde::Serialize;

/// One access log line. Never holds a secret: the path is logged without its query string.
#[derive(Serialize)]
pub struct AccessRecord<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client_ip: String,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub duration_ms: f64,
    pub route: &'a str,
    pub upstream: &'a str,
    /// What the gateway decided: `proxied`, or the policy that answered.
    pub decision: &'a str,
    /// The id of the API key that was accepted, when the route has `auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<&'a str>,
}

/// An audit event for an API key check, on the same stream as the access log. It names the
/// key by its id, never the key itself, and never holds the `Authorization` header.
#[derive(Serialize)]
pub struct AuthEvent<'a> {
    pub time: String,
    /// Always `"auth"`: tells these lines from access records.
    pub event: &'static str,
    /// `info` for an accepted key, `warn` for a refusal.
    pub level: &'static str,
    pub request_id: &'a str,
    pub client_ip: String,
    pub route: &'a str,
    pub policy: &'a str,
    /// `ok`, `missing`, `invalid`, `expired` or `forbidden`.
    pub result: &'static str,
    /// The key's id, or `unknown`.
    pub key_id: &'a str,
    /// `current`, `next`, `named`, or `none`.
    pub set: &'static str,
}

pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
}

const QUEUE: usize = 16 * 1024;

impl AccessLog {
    pub fn to_stdout() -> AccessLog {
        let (tx, rx) = sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx));
        if let Err(e) = spawned {
            log::error!("cannot start the access log writer: {e}");
        }
        AccessLog { tx }
    }

    /// Queues a line (an access record, or an audit event); returns false when it had to be
    /// dropped.
    pub fn write(&self, record: &impl Serialize) -> bool {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(_) => return false,
        };
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn write_lines(rx: Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        // Drain what is queued, then flush once; then let lines gather for a moment. Under
        // load this writes in batches and spares every request the cost of waking this
        // thread; when idle the first line is written at once.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(&line);
        }
        let _ = out.flush();
        std::thread::sleep(BATCH);
    }
}

/// How long the writer lets lines gather after a write.
const BATCH: std::time::Duration = std::time::Duration::from_millis(20);

pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
