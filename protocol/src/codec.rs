//! The one place where protocol messages become bytes and back (bincode 2, serde mode).
//!
//! ipc-channel serialises its own envelope with postcard; we send it our bincode bytes.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: bincode::error::EncodeError,
    },
    #[error("cannot decode {what} ({len} bytes): {source}")]
    Decode {
        what: &'static str,
        len: usize,
        source: bincode::error::DecodeError,
    },
}

/// The most a decoded message may claim (its strings and lists together). A length
/// in a corrupt or hostile message is checked against it before anything is
/// allocated: without it, a mutated length panicked with "capacity overflow" (found by
/// `protocol/tests/fuzz_up.rs`, kept in `tests/corpus/up/`) or could abort on a huge
/// allocation. The largest real messages (a long run's final report) are far below.
pub const DECODE_LIMIT_BYTES: usize = 256 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// Encode a message; `what` names it in errors.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|source| CodecError::Encode { what, source })
}

/// Decode a message; trailing bytes are an error (a truncated or mixed-up stream).
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(|source| {
        CodecError::Decode {
            what,
            len: bytes.len(),
            source,
        }
    })?;
    if used != bytes.len() {
        return Err(CodecError::Decode {
            what,
            len: bytes.len(),
            source: bincode::error::DecodeError::OtherString(format!(
                "{} trailing bytes",
                bytes.len() - used
            )),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PoolId, TaskId};
    use crate::messages::{Envelope, Eos, Hop, Inbox, Payload, PixelFormat};
    use crate::shm::ShmRef;

    #[test]
    fn envelope_round_trips() {
        let msg = Inbox::Data(Envelope {
            app: "faces".into(),
            source: "street.mp4".into(),
            seq: 42,
            created_ns: 7,
            hops: vec![Hop {
                stage: TaskId::new(1),
                recv_ns: 8,
                sent_ns: 9,
            }],
            payload: Payload::Frame {
                shm: ShmRef {
                    pool: PoolId::new(3),
                    slot: 1,
                    generation: 5,
                    offset: 0,
                    len: 12,
                },
                width: 2,
                height: 2,
                format: PixelFormat::Rgb8,
            },
        });
        let bytes = encode("inbox", &msg).expect("encode");
        let back: Inbox = decode("inbox", &bytes).expect("decode");
        assert_eq!(back, msg);
    }

    #[test]
    fn truncated_bytes_are_a_clear_error() {
        let bytes = encode(
            "inbox",
            &Inbox::Eos(Eos {
                stage: TaskId::new(1),
                replica: 0,
                totals: vec![],
            }),
        )
        .expect("encode");
        let err = decode::<Inbox>("inbox", &bytes[..bytes.len() - 1]).expect_err("must fail");
        assert!(err.to_string().contains("cannot decode inbox"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        let err = decode::<Inbox>("inbox", &longer).expect_err("must fail");
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}
