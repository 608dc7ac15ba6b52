//! `ordered`: jobs with the same key run one at a time, in publish order, across retries.
//!
//! Lanes are assigned on the publisher's side under one lock, so the order of `admit` calls is the
//! order of execution. The first job of a key goes to the pool queue; later ones park here (holding
//! their queue slot) until the running one ends, succeeded or dead-lettered.

use crate::dispatch::Job;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default)]
pub(crate) struct KeyLanes {
    busy: Mutex<HashMap<String, VecDeque<Job>>>,
}

impl KeyLanes {
    /// Returns the job when its key is free (the caller queues it), or parks it behind its key.
    pub(crate) fn admit(&self, key: &str, job: Job) -> Option<Job> {
        let mut busy = self.busy.lock();
        match busy.get_mut(key) {
            Some(parked) => {
                parked.push_back(job);
                None
            }
            None => {
                busy.insert(key.to_owned(), VecDeque::new());
                Some(job)
            }
        }
    }

    /// The job with `key` ended (or was evicted): returns the next one for that key, or frees the key.
    pub(crate) fn next(&self, key: &str) -> Option<Job> {
        let mut busy = self.busy.lock();
        let next = busy.get_mut(key).and_then(VecDeque::pop_front);
        if next.is_none() {
            busy.remove(key);
        }
        next
    }

    /// Every parked job (at shutdown).
    pub(crate) fn drain(&self) -> Vec<Job> {
        self.busy
            .lock()
            .drain()
            .flat_map(|(_, parked)| parked)
            .collect()
    }
}
