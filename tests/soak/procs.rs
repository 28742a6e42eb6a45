//! The soak's long-lived processes (two `churnwatch run` instances and `churnwatch
//! notify`): start, signals, resident memory samples, and each incarnation's record.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The processes the soak runs, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    A,
    B,
    Notifier,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::A => "a",
            Role::B => "b",
            Role::Notifier => "notifier",
        }
    }
}

/// One incarnation's life: when it ran and its resident memory (kB) over time.
#[derive(Debug, Clone)]
pub struct Life {
    pub role: Role,
    pub n: usize,
    pub start: Instant,
    pub end: Option<Instant>,
    pub rss: Vec<(Instant, u64)>,
    pub log: PathBuf,
}

/// A running process of the soak.
pub struct Proc {
    pub child: Child,
    pub life: Life,
    pub paused: bool,
}

impl Proc {
    /// Starts `cmd` as incarnation `n` of `role`, its stderr in a file of `dir`.
    pub fn spawn(mut cmd: Command, role: Role, n: usize, dir: &std::path::Path) -> Proc {
        let log = dir.join(format!("{}-{n}.log", role.name()));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start churnwatch");
        Proc {
            child,
            life: Life {
                role,
                n,
                start: Instant::now(),
                end: None,
                rss: Vec::new(),
                log,
            },
            paused: false,
        }
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Records the resident set size (VmRSS) now, if the process still runs.
    pub fn sample(&mut self) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        let kb = status.ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        });
        if let Some(kb) = kb {
            self.life.rss.push((Instant::now(), kb));
        }
    }

    /// The exit status, if it exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGKILL; the life it had.
    pub fn kill9(mut self) -> Life {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.life.end = Some(Instant::now());
        self.life.clone()
    }

    /// SIGTERM (after SIGCONT if paused), and the exit status within `timeout`.
    pub fn stop(mut self, timeout: Duration) -> (Life, Result<(), String>) {
        if self.paused {
            self.signal("CONT");
        }
        self.signal("TERM");
        let deadline = Instant::now() + timeout;
        let res = loop {
            if let Some(s) = self.exited() {
                break if s.success() {
                    Ok(())
                } else {
                    Err(format!("exited with {s}"))
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break Err(format!("still running {timeout:?} after SIGTERM"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.life.end = Some(Instant::now());
        (self.life.clone(), res)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.life.log)
    }
}

pub fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Memory of a long-lived incarnation: resident at the end of its warm-up (the
/// highest sample of the second quarter of its life) and at its end (the highest of
/// the last tenth), in kB.
pub fn memory(life: &Life) -> Option<(u64, u64)> {
    let (start, end) = (life.start, life.end?);
    let span = end - start;
    let within = |from: f64, to: f64| {
        life.rss
            .iter()
            .filter(|(t, _)| {
                let at = (*t - start).as_secs_f64() / span.as_secs_f64();
                at >= from && at <= to
            })
            .map(|(_, kb)| *kb)
            .max()
    };
    Some((within(0.25, 0.5)?, within(0.9, 1.0)?))
}
