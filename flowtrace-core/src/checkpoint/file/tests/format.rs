//! Framing, checksums, torn tails seen by the scanner, and file names.

use super::super::frame::{
    self, HEADER_LEN, MAX_NAME_LEN, decode_frame, encode_frame, file_name, fnv1a64, scan,
};
use super::super::*;
use super::*;

#[test]
fn fnv1a64_matches_reference_values() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn frames_are_length_checksum_payload() {
    let frame = encode_frame(br#"{"a":1}"#).unwrap();
    assert_eq!(&frame[..4], &7u32.to_le_bytes());
    assert_eq!(&frame[4..12], &fnv1a64(br#"{"a":1}"#).to_le_bytes());
    assert_eq!(&frame[12..], br#"{"a":1}"#);
    assert_eq!(decode_frame(&frame), Ok(&br#"{"a":1}"#[..]));
    let mut in_place = [&[0u8; HEADER_LEN][..], br#"{"a":1}"#].concat();
    frame::frame_in_place(&mut in_place).unwrap();
    assert_eq!(in_place, frame);
}

#[test]
fn scan_reads_every_whole_record() {
    let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
    let scan = scan(&buf).unwrap();
    assert!(scan.torn.is_none());
    let payloads: Vec<&[u8]> = scan.records.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        payloads,
        [&br#"{"a":1}"#[..], br#"{"b":22}"#, br#"{"c":333}"#]
    );
    assert_eq!(scan.records.last().map(|r| r.0), Some(buf.len()));
    assert!(frame::scan(&[]).unwrap().records.is_empty());
}

#[test]
fn scan_ignores_any_torn_tail() {
    let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
    let two = frames(&[br#"{"a":1}"#, br#"{"b":22}"#]).len();
    // Every cut inside the last record leaves the first two.
    for cut in two + 1..buf.len() {
        let scan = scan(&buf[..cut]).unwrap();
        assert_eq!(scan.records.len(), 2, "cut at {cut}");
        assert!(scan.torn.is_some(), "cut at {cut}");
    }
    // A flipped byte in the last record: a torn write too.
    let mut flipped = buf.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x40;
    let scan = scan(&flipped).unwrap();
    assert_eq!(scan.records.len(), 2);
    assert_eq!(scan.torn, Some("checksum mismatch"));
    // Zeros after the last record (a file extended but never written).
    let mut zeros = buf.clone();
    zeros.extend([0u8; 100]);
    let scan = frame::scan(&zeros).unwrap();
    assert_eq!(scan.records.len(), 3);
    assert!(scan.torn.is_some());
}

#[test]
fn scan_rejects_damage_before_valid_records() {
    let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
    let one = frames(&[br#"{"a":1}"#]).len();
    let two = frames(&[br#"{"a":1}"#, br#"{"b":22}"#]).len();
    // Flip each byte of the middle record in turn: header or payload.
    for i in one..two {
        let mut bad = buf.clone();
        bad[i] ^= 0x01;
        let err = scan(&bad).unwrap_err();
        assert_eq!(err.at, one, "flipped byte {i}");
        assert_eq!(err.next_valid, two, "flipped byte {i}");
    }
}

#[test]
fn file_names_are_safe_and_distinct() {
    let name = |s: &str| file_name(&ThreadId::new(s));
    assert_eq!(name("run_1-a"), "t-run_1-a.log");
    assert_eq!(name("A"), "t-%41.log");
    assert_eq!(name("../x y"), "t-%2E%2E%2Fx%20y.log");
    assert_eq!(name("%41"), "t-%2541.log");
    assert_eq!(name(""), "t-.log");
    assert_ne!(name("a").to_lowercase(), name("A").to_lowercase());
    let long = "é".repeat(200);
    let cut = name(&long);
    assert!(cut.len() <= MAX_NAME_LEN + 4, "{}", cut.len());
    assert!(cut.contains('~'));
    assert_ne!(cut, name(&format!("{long}x")));
    assert!(
        cut.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%~_-.".contains(&b))
    );
}
