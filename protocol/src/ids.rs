//! Typed ids: a task of an app ([`TaskId`]), a shared-memory pool ([`PoolId`]) and a
//! holder of shared-memory slots ([`HolderId`]). Each wraps the integer the wire always
//! carried and is `#[serde(transparent)]`, so the bincode messages and every JSON file
//! keep their bytes; `Display` prints the plain number, so log lines and error texts
//! read as before. Passing one where another is meant no longer compiles.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A number that does not fit the id it was meant for (an app of more tasks, pools or
/// holders than the wire can number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} is out of range for a {what} id (at most {max})")]
pub struct IdRangeError {
    pub what: &'static str,
    pub value: u64,
    pub max: u64,
}

/// The methods every id shares: `new`, `get`, `index`, `from_index`, `Display` (the
/// plain number) and the lossless conversion back to the integer.
macro_rules! id_type {
    ($name:ident, $int:ty, $what:literal) => {
        impl $name {
            /// The id of number `value`.
            pub const fn new(value: $int) -> $name {
                $name(value)
            }

            /// The number, as the wire carries it.
            pub const fn get(self) -> $int {
                self.0
            }

            /// The number as an index (into a table kept per id).
            pub fn index(self) -> usize {
                self.0 as usize
            }

            /// The id of index `index`, if the wire can carry it.
            pub fn from_index(index: usize) -> Result<$name, IdRangeError> {
                <$int>::try_from(index)
                    .map($name)
                    .map_err(|_| IdRangeError {
                        what: $what,
                        value: index as u64,
                        max: u64::from(<$int>::MAX),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$name> for $int {
            fn from(id: $name) -> $int {
                id.0
            }
        }
    };
}

/// The index of a task in its app (the order of the app file's `tasks`): the stage an
/// item passed ([`crate::messages::Hop`]), an end of stream came from, a setup is for.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TaskId(u16);
id_type!(TaskId, u16, "task");

/// A shared-memory slot pool, node-wide (the apps of a daemon share one numbering, so a
/// shared GPU agent can map every app's pools).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolId(u32);
id_type!(PoolId, u32, "pool");

/// Who a shared-memory hold is attributed to: one id per stage replica of an app, the
/// GPU agent, and [`HolderId::SUPERVISOR`] (see [`crate::shm`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HolderId(u16);
id_type!(HolderId, u16, "holder");

impl HolderId {
    /// The supervisor's holder id, in every pool.
    pub const SUPERVISOR: HolderId = HolderId(0);
    /// The largest holder id a pool can list.
    pub const MAX: HolderId = HolderId(u16::MAX - 1);
    /// No holder: an output whose consumer is not known (yet). No pool lists it, so a
    /// hold moved to it is refused.
    pub const NONE: HolderId = HolderId(u16::MAX);

    /// The id as the pool header stores it.
    pub const fn to_le_bytes(self) -> [u8; 2] {
        self.0.to_le_bytes()
    }

    /// The id the pool header stores as these bytes.
    pub const fn from_le_bytes(bytes: [u8; 2]) -> HolderId {
        HolderId(u16::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::messages::{
        Envelope, Eos, Hop, Inbox, OutputRoute, Payload, PixelFormat, PoolInfo, StayStats,
    };
    use crate::shm::ShmRef;
    use serde::Serialize;

    /// The wire shapes of before the typed ids, with bare integers.
    mod bare {
        use serde::Serialize;

        #[derive(Serialize)]
        pub struct ShmRef {
            pub pool: u32,
            pub slot: u32,
            pub generation: u32,
            pub offset: u64,
            pub len: u64,
        }
        #[derive(Serialize)]
        pub enum PixelFormat {
            Rgb8,
        }
        #[derive(Serialize)]
        pub enum Payload {
            Frame {
                shm: ShmRef,
                width: u32,
                height: u32,
                format: PixelFormat,
            },
        }
        #[derive(Serialize)]
        pub struct Hop {
            pub stage: u16,
            pub recv_ns: u64,
            pub sent_ns: u64,
        }
        #[derive(Serialize)]
        pub struct Envelope {
            pub app: String,
            pub source: String,
            pub seq: u64,
            pub created_ns: u64,
            pub hops: Vec<Hop>,
            pub payload: Payload,
        }
        #[derive(Serialize)]
        pub struct Eos {
            pub stage: u16,
            pub replica: u32,
            pub totals: Vec<()>,
        }
        /// `Inbox`'s first and third variants (`Skip` between them is not built here).
        #[derive(Serialize)]
        pub enum Inbox {
            Data(Envelope),
            /// Never built: it only holds `Eos` at its place (variant 2).
            #[allow(dead_code)]
            Skip,
            Eos(Eos),
        }
        #[derive(Serialize)]
        pub struct OutputRoute {
            pub task: String,
            pub first: u32,
            pub replicas: u32,
            pub active: u32,
            pub holders: Vec<u16>,
            pub by_item: bool,
        }
        #[derive(Serialize)]
        pub struct PoolInfo {
            pub id: u32,
            pub owner: String,
        }
    }

    fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
        codec::encode("test", value).expect("encode")
    }

    /// Ids large enough that bincode's varint takes more than one byte for each.
    const TASK: u16 = 300;
    const POOL: u32 = 70_000;
    const HOLDER: u16 = 65_000;

    #[test]
    fn messages_with_typed_ids_encode_to_the_bytes_of_bare_integers() {
        let typed = Inbox::Data(Envelope {
            app: "faces".into(),
            source: "street.mp4".into(),
            seq: 42,
            created_ns: 7,
            hops: vec![Hop {
                stage: TaskId::new(TASK),
                recv_ns: 8,
                sent_ns: 9,
            }],
            payload: Payload::Frame {
                shm: ShmRef {
                    pool: PoolId::new(POOL),
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
        let bare = bare::Inbox::Data(bare::Envelope {
            app: "faces".into(),
            source: "street.mp4".into(),
            seq: 42,
            created_ns: 7,
            hops: vec![bare::Hop {
                stage: TASK,
                recv_ns: 8,
                sent_ns: 9,
            }],
            payload: bare::Payload::Frame {
                shm: bare::ShmRef {
                    pool: POOL,
                    slot: 1,
                    generation: 5,
                    offset: 0,
                    len: 12,
                },
                width: 2,
                height: 2,
                format: bare::PixelFormat::Rgb8,
            },
        });
        assert_eq!(bytes(&typed), bytes(&bare));

        let typed = Inbox::Eos(Eos {
            stage: TaskId::new(TASK),
            replica: 3,
            totals: vec![],
        });
        let bare = bare::Inbox::Eos(bare::Eos {
            stage: TASK,
            replica: 3,
            totals: vec![],
        });
        assert_eq!(bytes(&typed), bytes(&bare));

        let typed = OutputRoute {
            task: "tail".into(),
            first: 0,
            replicas: 2,
            active: 2,
            holders: vec![HolderId::new(HOLDER), HolderId::new(1)],
            by_item: true,
        };
        let bare = bare::OutputRoute {
            task: "tail".into(),
            first: 0,
            replicas: 2,
            active: 2,
            holders: vec![HOLDER, 1],
            by_item: true,
        };
        assert_eq!(bytes(&typed), bytes(&bare));
        let info = |id| PoolInfo {
            id,
            owner: "head#0".into(),
        };
        let bare_info = bare::PoolInfo {
            id: POOL,
            owner: "head#0".into(),
        };
        assert_eq!(bytes(&info(PoolId::new(POOL))), bytes(&bare_info));
    }

    #[test]
    fn a_known_encoding_of_ids_stays_the_same() {
        let eos = Inbox::Eos(Eos {
            stage: TaskId::new(TASK),
            replica: 3,
            totals: vec![],
        });
        // bincode's varint: 251 + u16 LE for 300 and 65000, 252 + u32 LE for 70000.
        let want: Vec<u8> = vec![
            2, // Inbox::Eos
            251, 0x2c, 0x01, // stage 300
            3,    // replica
            0,    // totals
        ];
        assert_eq!(bytes(&eos), want);
        let info = PoolInfo {
            id: PoolId::new(POOL),
            owner: "h".into(),
        };
        assert_eq!(bytes(&info), vec![252, 0x70, 0x11, 0x01, 0x00, 1, b'h']);
        assert_eq!(
            bytes(&vec![HolderId::new(HOLDER)]),
            vec![1, 251, 0xe8, 0xfd]
        );
    }

    #[test]
    fn ids_are_plain_numbers_in_json_and_text() {
        let stays = StayStats::new(TaskId::new(TASK));
        let json = serde_json::to_value(&stays).expect("json");
        assert_eq!(json["stage"], serde_json::json!(TASK));
        let back: StayStats = serde_json::from_value(json).expect("back");
        assert_eq!(back.stage, TaskId::new(TASK));
        assert_eq!(format!("pool {}", PoolId::new(POOL)), "pool 70000");
        assert_eq!(format!("{}", HolderId::new(HOLDER)), "65000");
        assert_eq!(
            serde_json::to_string(&PoolId::new(POOL)).expect("json"),
            "70000"
        );
    }

    #[test]
    fn an_index_the_wire_cannot_carry_is_an_error() {
        assert_eq!(TaskId::from_index(7), Ok(TaskId::new(7)));
        assert_eq!(TaskId::new(7).index(), 7);
        let e = TaskId::from_index(usize::from(u16::MAX) + 1).expect_err("too large");
        assert_eq!(
            e.to_string(),
            "65536 is out of range for a task id (at most 65535)"
        );
        assert!(HolderId::from_index(70_000).is_err());
        assert_eq!(PoolId::from_index(70_000), Ok(PoolId::new(70_000)));
    }
}
