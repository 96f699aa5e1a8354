//! [`Checkpointer`] for [`FileCheckpointer`].

use async_trait::async_trait;

use super::{
    CHECKPOINT_PREFIX, Checkpoint, CheckpointBatch, CheckpointError, Checkpointer, Commit,
    FileCheckpointer, HEADER_LEN, Need, PendingWrite, PruneOutcome, Retention, ThreadFilter,
    ThreadInfo, batch_payload, encode, frame, frame_in_place, lock, write_entry, write_payload,
};
use crate::ids::ThreadId;

// ===== impl Checkpointer =====

#[async_trait]
impl Checkpointer for FileCheckpointer {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        checkpoint.check_format_version()?;
        self.blocking(move |inner| {
            let thread = &checkpoint.thread_id;
            // The frame header, then `{"checkpoint":<json>}`: framed in place.
            let mut start = [0u8; HEADER_LEN + CHECKPOINT_PREFIX.len()];
            let (_, prefix) = start.split_at_mut(HEADER_LEN);
            prefix.copy_from_slice(CHECKPOINT_PREFIX);
            let mut frame = encode::checkpoint_after(&start, &checkpoint)?;
            frame.push(b'}');
            frame_in_place(&mut frame).ok_or_else(|| CheckpointError::Corrupt {
                thread: thread.clone(),
                seq: checkpoint.seq,
                message: format!("record of {} bytes exceeds the 4 GiB limit", frame.len()),
            })?;
            inner.commit(
                thread,
                Commit::Checkpoint {
                    seq: checkpoint.seq,
                    frame,
                },
            )
        })
        .await
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| {
            inner.with_log(&thread, |log| {
                log.read(seq.map_or(Need::Latest, Need::Seq), |v| {
                    let Some(seq) = seq.or_else(|| v.index.latest()) else {
                        return Ok(None);
                    };
                    Ok(v.checkpoints(std::iter::once(seq))?.pop())
                })
            })
        })
        .await
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| {
            inner.with_log(&thread, |log| {
                log.read(Need::All, |v| {
                    let end = before.unwrap_or(u64::MAX).min(v.index.next_seq());
                    v.checkpoints((v.index.base..end).rev().take(limit))
                })
            })
        })
        .await
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| {
            let entry = write_entry(seq, &encode::write(&thread, seq, &write)?);
            let frame = frame(&thread, seq, &write_payload(&entry))?;
            drop(entry);
            inner.commit(
                &thread,
                Commit::Write {
                    seq,
                    task: write.task,
                    frame,
                },
            )
        })
        .await
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| {
            inner.with_log(&thread, |log| log.read(Need::Seq(seq), |v| v.writes(seq)))
        })
        .await
    }

    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        if batch.checkpoints.is_empty() && batch.writes.is_empty() {
            return Ok(());
        }
        for cp in &batch.checkpoints {
            cp.check_format_version()?;
        }
        let thread = thread.clone();
        self.blocking(move |inner| {
            let checkpoints = batch
                .checkpoints
                .iter()
                .map(encode::checkpoint)
                .collect::<Result<Vec<_>, _>>()?;
            let writes = batch
                .writes
                .iter()
                .map(|(seq, w)| Ok(write_entry(*seq, &encode::write(&thread, *seq, w)?)))
                .collect::<Result<Vec<_>, CheckpointError>>()?;
            let first = batch.checkpoints.first().map_or(0, |c| c.seq);
            let payload = batch_payload(None, &checkpoints, &writes).map_err(|e| {
                CheckpointError::Corrupt {
                    thread: thread.clone(),
                    seq: first,
                    message: format!("cannot encode the batch: {e}"),
                }
            })?;
            drop((checkpoints, writes));
            let frame = frame(&thread, first, &payload)?;
            drop(payload);
            inner.commit(&thread, Commit::Batch { batch, frame })
        })
        .await
    }

    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| {
            inner.with_log(&thread, |log| {
                log.read(Need::Seq(seq), |v| {
                    let index = v.index;
                    let Some(latest) = index.latest() else {
                        return Err(CheckpointError::ThreadNotFound {
                            thread: thread.clone(),
                        });
                    };
                    if seq > latest {
                        return Err(CheckpointError::CheckpointNotFound {
                            thread: thread.clone(),
                            seq,
                            latest,
                        });
                    }
                    if seq < index.base {
                        return Err(CheckpointError::Pruned {
                            thread: thread.clone(),
                            seq,
                            oldest: index.base,
                        });
                    }
                    let start = index
                        .last_full(seq)
                        .filter(|&f| f >= index.base)
                        .ok_or_else(|| CheckpointError::Corrupt {
                            thread: thread.clone(),
                            seq,
                            message: "no full state before this checkpoint".into(),
                        })?;
                    v.checkpoints(start..=seq)
                })
            })
        })
        .await
    }

    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| {
            let existed = inner.with_log(&thread, |log| log.delete(&inner.dir))?;
            lock(&inner.cache).remove(&thread);
            Ok(existed)
        })
        .await
    }

    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| inner.with_log(&thread, |log| log.prune(&inner.dir, keep)))
            .await
    }

    async fn list_threads(
        &self,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadInfo>, CheckpointError> {
        let filter = filter.clone();
        self.blocking(move |inner| inner.list_threads(&filter))
            .await
    }

    async fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError> {
        let (from, to) = (from.clone(), to.clone());
        self.blocking(move |inner| inner.copy_thread(&from, &to))
            .await
    }
}
