//! Small, bounded pools of threads for the waiting a request needs, so no FUSE request thread
//! ever blocks on SQLite or on the store's disk: store workers read values' ciphertext, and
//! openers carry an open through its (bounded) waits and send its reply, leaving the request
//! threads free for `ls` and `stat`.
//!
//! A caller of [`Workers::run`] hands its job over and waits until its deadline, then answers
//! EIO whatever the job is doing. The queue is bounded: when every worker is stuck (a frozen disk) and the
//! queue is full, requests fail at once instead of piling up. A worker stuck in the kernel
//! (D state on a frozen disk) cannot be killed or interrupted by anyone; it only holds its own
//! thread, and the mount never waits for it to end.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerError {
    /// Every worker is busy and the queue is full: the store is stuck.
    Busy,
    /// The deadline passed before the job answered.
    TimedOut,
}

/// The pool. Dropping it lets idle workers exit; stuck ones exit when their job returns.
#[derive(Debug)]
pub struct Workers {
    queue: Sender<Job>,
}

impl Workers {
    /// Starts `threads` workers sharing a queue of `queue_len` jobs.
    pub fn start(name: &str, threads: usize, queue_len: usize) -> std::io::Result<Workers> {
        let (queue, jobs) = crossbeam_channel::bounded::<Job>(queue_len);
        for i in 0..threads {
            let jobs: Receiver<Job> = jobs.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    for job in jobs {
                        // A panicking job must not take the worker with it; its caller sees
                        // the dropped answer channel as a failure.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Workers { queue })
    }

    /// Hands `job` to a worker and returns at once; `Busy` when the queue is full.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) -> Result<(), WorkerError> {
        self.queue
            .try_send(Box::new(job))
            .map_err(|_| WorkerError::Busy)
    }

    /// Runs `job` on a worker and waits for its answer until `deadline`.
    pub fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerError> {
        let (answer, answered) = crossbeam_channel::bounded(1);
        let boxed: Job = Box::new(move || {
            // The caller may have given up; then the answer is dropped here.
            let _ = answer.send(job());
        });
        match self.queue.try_send(boxed) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                return Err(WorkerError::Busy)
            }
        }
        match answered.recv_deadline(deadline) {
            Ok(value) => Ok(value),
            Err(RecvTimeoutError::Timeout) => Err(WorkerError::TimedOut),
            // The job panicked.
            Err(RecvTimeoutError::Disconnected) => Err(WorkerError::Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_then_times_out_then_fails_fast_when_full() {
        let pool = Workers::start("t", 1, 1).unwrap();
        let soon = || Instant::now() + Duration::from_secs(5);
        assert_eq!(pool.run(soon(), || 7), Ok(7));
        // Wedge the only worker, then fill the one queue slot.
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        let started = Instant::now();
        let stuck = pool.run(Instant::now() + Duration::from_millis(50), move || {
            let _ = wait.recv();
        });
        assert_eq!(stuck, Err(WorkerError::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(2));
        let queued = pool.run(Instant::now() + Duration::from_millis(50), || 1);
        assert_eq!(queued, Err(WorkerError::TimedOut));
        let started = Instant::now();
        assert_eq!(pool.run(soon(), || 2), Err(WorkerError::Busy));
        assert!(started.elapsed() < Duration::from_millis(100), "fails fast");
        drop(release);
        // The queued job ran (and its answer was dropped); the pool works again.
        let mut ok = false;
        for _ in 0..100 {
            if pool.run(soon(), || 3) == Ok(3) {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ok);
    }

    #[test]
    fn a_panicking_job_does_not_kill_the_worker() {
        let pool = Workers::start("t", 1, 4).unwrap();
        let soon = || Instant::now() + Duration::from_secs(5);
        assert!(pool.run(soon(), || -> u8 { panic!("boom") }).is_err());
        assert_eq!(pool.run(soon(), || 4), Ok(4));
    }
}
