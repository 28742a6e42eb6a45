//! A churnwatch process a test starts: its stderr goes to a log file, from which the
//! test reads the address its HTTP server listens on; it is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin, logged_http_addr};

pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// `churnwatch` with `args`, as `configure` sets it up (environment), on
    /// `127.0.0.1:0`, logging to `log`.
    pub fn spawn(args: &[&str], log: PathBuf, configure: impl FnOnce(&mut Command)) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("CHURNWATCH_SERVER__LISTEN", "127.0.0.1:0");
        configure(&mut cmd);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    /// The address of its HTTP server, once it has logged it; panics with the log if
    /// it has not within `timeout`.
    pub fn addr_within(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = logged_http_addr(&log) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the http address in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address of its HTTP server, once it has logged it (within 60 s).
    pub fn addr(&self) -> String {
        self.addr_within(Duration::from_secs(60))
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
