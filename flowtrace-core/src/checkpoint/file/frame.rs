//! Framing of log records, splitting a log into records, and log file
//! names.

use crate::ids::ThreadId;

/// Bytes before each payload: a `u32` length and a `u64` checksum, both
/// little-endian.
pub(super) const HEADER_LEN: usize = 12;

/// Longest encoded thread name kept whole in a file name; longer ones are
/// cut and suffixed with a hash (file names are limited to 255 bytes).
pub(super) const MAX_NAME_LEN: usize = 200;

/// The log file name of `thread` (see [`FileCheckpointer`](super::FileCheckpointer)).
pub(super) fn file_name(thread: &ThreadId) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let id = thread.as_str().as_bytes();
    let mut name = String::with_capacity(id.len() + 6);
    name.push_str("t-");
    for &b in id {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push('%');
            name.push(char::from(HEX[usize::from(b >> 4)]));
            name.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    if name.len() > MAX_NAME_LEN {
        // Only ASCII was pushed, so any byte index is a char boundary. `~`
        // never appears in a whole name (it is escaped), so cut names can't
        // equal whole ones.
        name.truncate(MAX_NAME_LEN - 17);
        name.push('~');
        name.push_str(&format!("{:016x}", fnv1a64(id)));
    }
    name.push_str(".log");
    name
}

/// What a directory entry's name says about the log it holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LogName {
    /// Not a thread's log (another file, or a temporary one).
    Other,
    /// The log of this thread.
    Whole(ThreadId),
    /// The log of a thread whose id was too long to keep whole: its first
    /// record names it.
    Cut,
}

/// Reads a directory entry's name back (the inverse of [`file_name`]).
pub(super) fn parse_file_name(name: &str) -> LogName {
    let Some(encoded) = name.strip_prefix("t-").and_then(|n| n.strip_suffix(".log")) else {
        return LogName::Other;
    };
    if encoded.contains('~') {
        return LogName::Cut;
    }
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let Some((hex, tail)) = tail.split_first_chunk::<2>() else {
                return LogName::Other;
            };
            let Some(byte) = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            else {
                return LogName::Other;
            };
            bytes.push(byte);
            rest = tail;
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    match String::from_utf8(bytes) {
        // Only names this store writes: one spelling per thread.
        Ok(id) if file_name(&ThreadId::new(&id)) == name => LogName::Whole(ThreadId::new(id)),
        _ => LogName::Other,
    }
}

/// FNV-1a, 64-bit.
pub(super) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Frames a payload; `None` if it is too long for the length field.
pub(super) fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&fnv1a64(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}

/// Frames the payload written after [`HEADER_LEN`] reserved bytes at the
/// start of `buf`, in place; `None` if it is too long for the length field.
pub(super) fn frame_in_place(buf: &mut [u8]) -> Option<()> {
    let (header, payload) = buf.split_at_mut_checked(HEADER_LEN)?;
    let len = u32::try_from(payload.len()).ok()?;
    let sum = fnv1a64(payload);
    let (l, c) = header.split_at_mut(4);
    l.copy_from_slice(&len.to_le_bytes());
    c.copy_from_slice(&sum.to_le_bytes());
    Some(())
}

/// Splits a frame header off `buf`: (payload length, checksum, rest).
pub(super) fn read_header(buf: &[u8]) -> Option<(usize, u64, &[u8])> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let (sum, rest) = rest.split_first_chunk::<8>()?;
    Some((
        u32::from_le_bytes(*len) as usize,
        u64::from_le_bytes(*sum),
        rest,
    ))
}

/// The payload of the frame at the start of `buf`, or why it is not whole.
pub(super) fn decode_frame(buf: &[u8]) -> Result<&[u8], &'static str> {
    let (len, sum, rest) = read_header(buf).ok_or("incomplete header")?;
    let payload = rest.get(..len).ok_or("payload shorter than its length")?;
    if fnv1a64(payload) != sum {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

/// The valid records of a log, in order.
#[derive(Debug)]
pub(super) struct Scan<'a> {
    /// Each record's end offset and payload.
    pub(super) records: Vec<(usize, &'a [u8])>,
    /// Why the bytes after the last record are not one (a torn write).
    pub(super) torn: Option<&'static str>,
}

/// A damaged record followed by a valid one.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ScanError {
    pub(super) at: usize,
    pub(super) reason: &'static str,
    pub(super) next_valid: usize,
}

/// Splits a log into records. A bad record at the end is a torn write and
/// is reported in [`Scan::torn`]; a bad record with a valid one after it is
/// a [`ScanError`].
pub(super) fn scan(buf: &[u8]) -> Result<Scan<'_>, ScanError> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(rest) = buf.get(at..).filter(|r| !r.is_empty()) {
        match decode_frame(rest) {
            Ok(payload) => {
                at += HEADER_LEN + payload.len();
                records.push((at, payload));
            }
            Err(reason) => {
                if let Some(next_valid) = valid_frame_after(buf, at + 1) {
                    return Err(ScanError {
                        at,
                        reason,
                        next_valid,
                    });
                }
                return Ok(Scan {
                    records,
                    torn: Some(reason),
                });
            }
        }
    }
    Ok(Scan {
        records,
        torn: None,
    })
}

/// The first offset at or after `from` where a valid frame starts.
///
/// Cheap in practice: payloads are JSON text, whose bytes read as a length
/// are hundreds of megabytes, so almost every offset fails the length check
/// before any checksum is computed.
pub(super) fn valid_frame_after(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&at| {
        let Some((len, sum, rest)) = buf.get(at..).and_then(read_header) else {
            return false;
        };
        rest.get(..len)
            .is_some_and(|p| p.len() >= 2 && p.first() == Some(&b'{') && fnv1a64(p) == sum)
    })
}
