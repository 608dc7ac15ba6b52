//! The done watermark of one partition: Kafka commits one offset per partition ("everything
//! before this is finished"), while Herald finishes messages out of order (concurrent handlers,
//! retries). Only the first offset not yet finished may be stored, so a crash never skips a
//! message whose handlers had not finished.

use std::collections::BTreeSet;

/// The offsets of one partition this consumer has read and not finished.
#[derive(Debug, Default)]
pub(crate) struct PartitionOffsets {
    /// Read and not finished.
    unfinished: BTreeSet<i64>,
    /// One past the highest offset read (`None`: nothing read yet).
    next: Option<i64>,
    /// The last watermark handed to librdkafka to commit (at first: the first offset read).
    stored: Option<i64>,
}

impl PartitionOffsets {
    /// `offset` was read and is not finished.
    pub(crate) fn read(&mut self, offset: i64) {
        // Where reading began is no progress: nothing is stored until a watermark passes it.
        self.stored.get_or_insert(offset);
        self.unfinished.insert(offset);
        let next = offset.saturating_add(1);
        self.next = Some(self.next.map_or(next, |n| n.max(next)));
    }

    /// `offset` is finished; returns the new watermark (the next offset to consume) when it
    /// moved forward, to be stored for the next commit.
    pub(crate) fn finish(&mut self, offset: i64) -> Option<i64> {
        if !self.unfinished.remove(&offset) {
            return None;
        }
        let watermark = self.watermark()?;
        if self.stored.is_some_and(|stored| stored >= watermark) {
            return None;
        }
        self.stored = Some(watermark);
        Some(watermark)
    }

    /// The last watermark stored (at first: the first offset read), to commit when the
    /// partition is revoked.
    pub(crate) fn stored(&self) -> Option<i64> {
        self.stored
    }

    /// The first offset read and not finished, or one past the last read when all are finished:
    /// what may be committed. `None` before anything was read.
    pub(crate) fn watermark(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next)
    }

    /// How many offsets are read and not finished.
    #[cfg(test)]
    pub(crate) fn unfinished(&self) -> usize {
        self.unfinished.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_never_passes_an_unfinished_offset() {
        let mut offsets = PartitionOffsets::default();
        assert_eq!(offsets.watermark(), None);
        for offset in 10..15 {
            offsets.read(offset);
        }
        assert_eq!(offsets.watermark(), Some(10));
        // Later ones finish first: nothing may be stored while 10 runs.
        assert_eq!(offsets.finish(12), None);
        assert_eq!(offsets.finish(11), None);
        assert_eq!(offsets.finish(14), None);
        assert_eq!(offsets.watermark(), Some(10));
        // 10 finishes: everything up to 12 is done, 13 is not.
        assert_eq!(offsets.finish(10), Some(13));
        assert_eq!(offsets.finish(13), Some(15));
        assert_eq!(offsets.unfinished(), 0);
        assert_eq!(offsets.watermark(), Some(15));
    }

    #[test]
    fn finishing_twice_or_an_unknown_offset_stores_nothing() {
        let mut offsets = PartitionOffsets::default();
        offsets.read(3);
        assert_eq!(offsets.finish(3), Some(4));
        assert_eq!(offsets.finish(3), None);
        assert_eq!(offsets.finish(99), None);
    }

    #[test]
    fn a_gap_in_the_offsets_is_skipped() {
        // Compacted topics and transaction markers leave gaps: the watermark jumps over them.
        let mut offsets = PartitionOffsets::default();
        offsets.read(5);
        offsets.read(9);
        assert_eq!(offsets.finish(5), Some(9));
        assert_eq!(offsets.finish(9), Some(10));
    }
}
