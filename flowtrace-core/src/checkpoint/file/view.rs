//! Reading a thread's checkpoints and writes through its index and open log.

use std::fs::File;
use std::path::Path;

use super::disk::read_range;
use super::index::{Index, Loc};
use super::record::*;
use crate::checkpoint::{Checkpoint, CheckpointError, PendingWrite, encode};

/// A thread's index with its open log, for reading checkpoints and writes.
pub(super) struct View<'a> {
    pub(super) index: &'a Index,
    pub(super) file: Option<&'a File>,
    pub(super) path: &'a Path,
}

impl View<'_> {
    /// Reads one range of the log covering every one of `locs`.
    pub(super) fn span<'l>(
        &self,
        locs: impl Iterator<Item = &'l Loc> + Clone,
    ) -> Result<Span, CheckpointError> {
        let from = locs.clone().map(|l| l.at).min();
        let to = locs.map(|l| l.end()).max();
        let (Some(from), Some(to)) = (from, to) else {
            return Ok(Span {
                at: 0,
                buf: Vec::new(),
            });
        };
        let Some(file) = self.file else {
            return Err(self.index.corrupt("indexed, but no log is open".into()));
        };
        Ok(Span {
            at: from,
            buf: read_range(file, self.path, from, to - from)?,
        })
    }

    /// The checkpoints with these `seqs` (in that order), skipping those
    /// the thread does not have.
    pub(super) fn checkpoints(
        &self,
        seqs: impl Iterator<Item = u64>,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let found: Vec<(u64, Loc)> = seqs
            .filter_map(|s| self.index.slot(s).map(|l| (s, l)))
            .collect();
        let span = self.span(found.iter().map(|(_, l)| l))?;
        found
            .iter()
            .map(|(seq, loc)| encode::read_checkpoint(&self.index.thread, *seq, span.get(*loc)?))
            .collect()
    }

    /// The pending writes saved after checkpoint `seq`, by task position.
    pub(super) fn writes(&self, seq: u64) -> Result<Vec<PendingWrite>, CheckpointError> {
        let locs = self.index.writes_of(seq);
        let span = self.span(locs.iter())?;
        locs.iter()
            .map(|loc| {
                serde_json::from_slice::<WriteEntry>(span.get(*loc)?)
                    .map(|e| e.write)
                    .map_err(|e| CheckpointError::Corrupt {
                        thread: self.index.thread.clone(),
                        seq,
                        message: format!("a pending write cannot be read: {e}"),
                    })
            })
            .collect()
    }

    /// Every pending write entry, as stored.
    pub(super) fn raw_writes(&self) -> Result<Vec<Vec<u8>>, CheckpointError> {
        let locs: Vec<Loc> = self.index.writes.values().copied().collect();
        self.span(locs.iter())?.all(&locs)
    }
}

/// Bytes of a log read in one go, starting at byte `at`.
pub(super) struct Span {
    at: u64,
    buf: Vec<u8>,
}

impl Span {
    pub(super) fn get(&self, loc: Loc) -> Result<&[u8], CheckpointError> {
        usize::try_from(loc.at - self.at)
            .ok()
            .and_then(|from| self.buf.get(from..from.checked_add(loc.len as usize)?))
            .ok_or_else(|| CheckpointError::Backend {
                message: "checkpoint log read short (an index points past what was read)".into(),
                source: None,
            })
    }

    pub(super) fn all(&self, locs: &[Loc]) -> Result<Vec<Vec<u8>>, CheckpointError> {
        locs.iter()
            .map(|l| self.get(*l).map(<[u8]>::to_vec))
            .collect()
    }
}
