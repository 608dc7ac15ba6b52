//! `ordered`: jobs with the same key run one at a time, in publish order, across retries.
//!
//! Lanes are assigned on the publisher's side under one lock, so the order of `admit` calls is the
//! order of execution. The first job of a key runs (from the pool queue, or on its publisher's task
//! under `CallerRuns`); later ones park here until the running one ends, succeeded or dead-lettered.
//!
//! A parked job is one of two kinds. A **queued** job holds its pool-queue slot while it waits, so
//! the queue bound covers parked jobs too; when its turn comes it runs on the worker that ran the
//! job before it, or goes into the pool queue when that job ran on a publisher's task. A **caller**
//! job (`CallerRuns` found the pool full while its key was busy) holds no slot: its publisher waits
//! for its turn, then runs it on its own task. That keeps `CallerRuns`' backpressure (the publisher
//! is held up) and the key's order; such jobs are bounded by the number of waiting publishers.

use crate::engine::publish::Job;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use tokio::sync::oneshot;

/// A job waiting for its key.
#[derive(Debug)]
pub(crate) enum Parked {
    /// Holds a pool-queue slot; runs on a worker.
    Queued(Job),
    /// Holds no slot; its publisher waits on the other end of `turn` to run it on its own task.
    Caller {
        job: Job,
        turn: oneshot::Sender<Job>,
    },
}

#[derive(Debug, Default)]
pub(crate) struct KeyLanes {
    busy: Mutex<HashMap<String, VecDeque<Parked>>>,
}

/// What `admit` decided for a job.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// The key was free: the job runs now, and holds the key until it ends.
    Run(Job),
    /// Parked behind its key (a queued job: nothing more to do).
    Parked,
    /// Parked behind its key (a caller job): the publisher awaits its turn here.
    Wait(oneshot::Receiver<Job>),
}

impl KeyLanes {
    /// Admits a job that holds a queue slot: returns it when its key is free (the caller queues it),
    /// or parks it behind its key.
    pub(crate) fn admit(&self, key: &str, job: Job) -> Admitted {
        self.admit_parked(key, job, Parked::Queued)
    }

    /// Admits a job its publisher will run (`CallerRuns`): returns it when its key is free, or parks
    /// it and returns the receiver on which its turn will come.
    pub(crate) fn admit_caller(&self, key: &str, job: Job) -> Admitted {
        let mut receiver = None;
        let admitted = self.admit_parked(key, job, |job| {
            let (turn, rx) = oneshot::channel();
            receiver = Some(rx);
            Parked::Caller { job, turn }
        });
        match (admitted, receiver) {
            (Admitted::Parked, Some(rx)) => Admitted::Wait(rx),
            (admitted, _) => admitted,
        }
    }

    fn admit_parked(&self, key: &str, job: Job, park: impl FnOnce(Job) -> Parked) -> Admitted {
        let mut busy = self.busy.lock();
        match busy.get_mut(key) {
            Some(parked) => {
                parked.push_back(park(job));
                Admitted::Parked
            }
            None => {
                busy.insert(key.to_owned(), VecDeque::new());
                Admitted::Run(job)
            }
        }
    }

    /// The job with `key` ended (or was evicted): returns the next one for that key, which now holds
    /// the key, or frees the key.
    pub(crate) fn next(&self, key: &str) -> Option<Parked> {
        let mut busy = self.busy.lock();
        let next = busy.get_mut(key).and_then(VecDeque::pop_front);
        if next.is_none() {
            busy.remove(key);
        }
        next
    }

    /// Every parked job (at shutdown).
    pub(crate) fn drain(&self) -> Vec<Parked> {
        self.busy
            .lock()
            .drain()
            .flat_map(|(_, parked)| parked)
            .collect()
    }
}
