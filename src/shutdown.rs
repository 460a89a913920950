//! Graceful shutdown as a small type of its own: every connection task holds a
//! [`Shutdown`] and learns from it when to stop taking work and when to close.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// No new connections; live sessions may finish.
    Draining,
    /// The grace period is over: close every session now.
    Closing,
}

/// Sender side, owned by the server.
#[derive(Debug)]
pub struct ShutdownController {
    tx: watch::Sender<Phase>,
}

/// Receiver side, one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Phase>,
}

impl ShutdownController {
    pub fn new() -> (ShutdownController, Shutdown) {
        let (tx, rx) = watch::channel(Phase::Running);
        (ShutdownController { tx }, Shutdown { rx })
    }

    pub fn set(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            if phase > *p {
                *p = phase;
                true
            } else {
                false
            }
        });
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Resolves once the phase is at least `phase` (or the controller is gone).
    pub async fn reached(&mut self, phase: Phase) {
        let _ = self.rx.wait_for(|p| *p >= phase).await;
    }
}
