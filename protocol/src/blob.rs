//! The content of `bench.blob` items: the head writes it, `bench.sink` and the
//! supervisor's `bench` check it byte by byte, so all three share this one definition.

/// Byte `i` of `bench.blob` item `seq`: the sequence number (little-endian) in the first
/// eight bytes, then a fixed pattern.
pub fn blob_byte(i: usize, seq: u64) -> u8 {
    if i < 8 {
        seq.to_le_bytes()[i]
    } else {
        (i * 31 % 251) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_starts_with_its_sequence_number() {
        let head: Vec<u8> = (0..8).map(|i| blob_byte(i, 0x0102_0304)).collect();
        assert_eq!(u64::from_le_bytes(head.try_into().unwrap()), 0x0102_0304);
        assert_ne!(blob_byte(8, 1), blob_byte(9, 1));
        assert_eq!(blob_byte(300, 1), blob_byte(300, 2));
    }
}
