//! Where sessions run: the execution provider ([`Provider`]), named as the agent names its
//! device (`cpu:0`, `cuda:N`).

use std::fmt;

use crate::error::{Result, VisionError};

/// Which execution provider sessions run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// ORT's CPU provider (`cpu:0`).
    Cpu,
    /// CUDA device N (needs the `cuda` cargo feature and an onnxruntime-gpu library).
    Cuda { device_id: i32 },
}

impl std::str::FromStr for Provider {
    type Err = VisionError;
    /// A device as the agent names it: `cpu:0` (or `cpu`), `cuda:N` (or `cuda` = `cuda:0`).
    fn from_str(s: &str) -> Result<Provider> {
        let bad = || VisionError::Setting {
            name: "device",
            value: s.into(),
            msg: "expected cpu:0 or cuda:N",
        };
        match s.split_once(':').unwrap_or((s, "0")) {
            ("cpu", "0") => Ok(Provider::Cpu),
            ("cuda", n) => n
                .parse()
                .ok()
                .filter(|&id: &i32| id >= 0)
                .map(|device_id| Provider::Cuda { device_id })
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Cpu => write!(f, "cpu:0"),
            Provider::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}
