//! Size limits on what input can make SmartPipe allocate: pixels per frame (checked on
//! app parameters, on image headers before decoding, on probed videos), bytes per
//! shared-memory slot and bytes per pool (checked by the planner before any pool is
//! created), and the range of item rates. Each has a default and an environment
//! variable; a violation names what, where and both sizes.

/// Pixels one frame may have unless `SMARTPIPE_MAX_PIXELS` says otherwise (100 Mpx).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
/// Bytes one shared-memory slot may have unless `SMARTPIPE_MAX_SLOT_BYTES` says otherwise (4 GiB).
pub const DEFAULT_MAX_SLOT_BYTES: u64 = 4 << 30;
/// Bytes one pool (every slot of one producing replica) may have unless
/// `SMARTPIPE_MAX_POOL_BYTES` says otherwise (8 GiB).
pub const DEFAULT_MAX_POOL_BYTES: u64 = 8 << 30;

pub const ENV_MAX_PIXELS: &str = "SMARTPIPE_MAX_PIXELS";
pub const ENV_MAX_SLOT_BYTES: &str = "SMARTPIPE_MAX_SLOT_BYTES";
pub const ENV_MAX_POOL_BYTES: &str = "SMARTPIPE_MAX_POOL_BYTES";
/// Processes one app may have (one per replica, plus the GPU agent) unless
/// `SMARTPIPE_MAX_PROCESSES` says otherwise; never more than the pools' holder ids allow.
pub const DEFAULT_MAX_PROCESSES: u64 = 4096;
pub const ENV_MAX_PROCESSES: &str = "SMARTPIPE_MAX_PROCESSES";

/// The slowest rate a paced source takes (one item per 1,000 s); 0 means unpaced.
pub const MIN_RATE: f64 = 1e-3;
/// The fastest rate a paced source takes (items per second).
pub const MAX_RATE: f64 = 1e6;
/// The most items one batch may collect.
pub const MAX_BATCH: u32 = 1024;
/// The longest a batch may wait to fill, in milliseconds (an hour).
pub const MAX_WAIT_MS: f64 = 3_600_000.0;
/// The longest app or task name: it becomes part of file names (run dirs, logs).
pub const MAX_NAME_LEN: usize = 100;

/// A limit exceeded, or a limit set to something that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{what}: {width}×{height} = {} exceeds the {} limit ({ENV_MAX_PIXELS})", pixels(*width as u128 * *height as u128), pixels(*limit as u128))]
    Pixels {
        what: String,
        width: u64,
        height: u64,
        limit: u64,
    },
    #[error("{what}: {} exceeds the {} limit ({env})", bytes(*size), bytes(*limit as u128))]
    Bytes {
        what: String,
        size: u128,
        limit: u64,
        env: &'static str,
    },
    #[error("{env}={value:?} is not a size (a whole number ≥ 1 expected)")]
    BadSetting { env: &'static str, value: String },
}

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_pixels: u64,
    pub max_slot_bytes: u64,
    pub max_pool_bytes: u64,
    pub max_processes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_slot_bytes: DEFAULT_MAX_SLOT_BYTES,
            max_pool_bytes: DEFAULT_MAX_POOL_BYTES,
            max_processes: DEFAULT_MAX_PROCESSES,
        }
    }
}

fn setting(env: &'static str, default: u64) -> Result<u64, LimitError> {
    match std::env::var(env) {
        Err(_) => Ok(default),
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(v) if v >= 1 => Ok(v),
            _ => Err(LimitError::BadSetting { env, value }),
        },
    }
}

impl Limits {
    /// The defaults, replaced by the environment's `SMARTPIPE_MAX_*` where set.
    pub fn from_env() -> Result<Limits, LimitError> {
        Ok(Limits {
            max_pixels: setting(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS)?,
            max_slot_bytes: setting(ENV_MAX_SLOT_BYTES, DEFAULT_MAX_SLOT_BYTES)?,
            max_pool_bytes: setting(ENV_MAX_POOL_BYTES, DEFAULT_MAX_POOL_BYTES)?,
            max_processes: setting(ENV_MAX_PROCESSES, DEFAULT_MAX_PROCESSES)?
                .min(u64::from(crate::shm::MAX_HOLDER_ID)),
        })
    }

    /// A frame of `width`×`height` is within the pixel limit (`what` names it in the error).
    pub fn check_frame(&self, what: &str, width: u64, height: u64) -> Result<(), LimitError> {
        if u128::from(width) * u128::from(height) > u128::from(self.max_pixels) {
            return Err(LimitError::Pixels {
                what: what.to_string(),
                width,
                height,
                limit: self.max_pixels,
            });
        }
        Ok(())
    }

    /// A slot of `size` bytes is within the slot limit.
    pub fn check_slot(&self, what: &str, size: u128) -> Result<(), LimitError> {
        check_bytes(what, size, self.max_slot_bytes, ENV_MAX_SLOT_BYTES)
    }

    /// A pool of `size` bytes is within the pool limit.
    pub fn check_pool(&self, what: &str, size: u128) -> Result<(), LimitError> {
        check_bytes(what, size, self.max_pool_bytes, ENV_MAX_POOL_BYTES)
    }
}

fn check_bytes(what: &str, size: u128, limit: u64, env: &'static str) -> Result<(), LimitError> {
    if size > u128::from(limit) {
        return Err(LimitError::Bytes {
            what: what.to_string(),
            size,
            limit,
            env,
        });
    }
    Ok(())
}

/// A count of pixels for people: `3.6 Gpx`, `100 Mpx`, `640 px`.
pub fn pixels(n: u128) -> String {
    scaled(n, "px")
}

/// A count of bytes for people: `10.8 GB`, `300 MB`.
pub fn bytes(n: u128) -> String {
    scaled(n, "B")
}

fn scaled(n: u128, unit: &str) -> String {
    const PREFIXES: [(u128, &str); 5] = [
        (1_000_000_000_000_000, "P"),
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    for (scale, prefix) in PREFIXES {
        if n >= scale {
            let whole = n / scale;
            let tenth = (n % scale) * 10 / scale;
            return if tenth == 0 || whole >= 100 {
                format!("{whole} {prefix}{unit}")
            } else {
                format!("{whole}.{tenth} {prefix}{unit}")
            };
        }
    }
    format!("{n} {unit}")
}

/// `None` when `rate` (items per second) is 0 or within [`MIN_RATE`]..=[`MAX_RATE`], else
/// what is wrong with it.
pub fn rate_problem(rate: f64) -> Option<String> {
    if rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&rate) {
        None
    } else {
        // Very small or large numbers in scientific notation, not hundreds of digits.
        let got = if rate.is_finite() && rate != 0.0 && !(1e-3..1e9).contains(&rate.abs()) {
            format!("{rate:e}")
        } else {
            format!("{rate}")
        };
        Some(format!(
            "must be 0 (unpaced) or between {MIN_RATE} and {MAX_RATE} items per second, got {got}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bomb_header_is_named_with_its_sizes() {
        let err = Limits::default()
            .check_frame("photo.png", 60000, 60000)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "photo.png: 60000×60000 = 3.6 Gpx exceeds the 100 Mpx limit (SMARTPIPE_MAX_PIXELS)"
        );
        assert!(Limits::default()
            .check_frame("ok.png", 10000, 10000)
            .is_ok());
        let huge = Limits::default()
            .check_frame("w", u64::MAX, u64::MAX)
            .unwrap_err();
        assert!(huge.to_string().contains("exceeds"), "{huge}");
    }

    #[test]
    fn bytes_and_rates_are_checked() {
        let err = Limits::default()
            .check_pool("pool of src", 8 * 10_800_000_000)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool of src: 86.4 GB exceeds the 8.5 GB limit (SMARTPIPE_MAX_POOL_BYTES)"
        );
        assert!(rate_problem(1e-320).is_some());
        assert!(rate_problem(f64::NAN).is_some());
        assert!(rate_problem(-1.0).is_some());
        assert!(rate_problem(0.0).is_none());
        assert!(rate_problem(30.0).is_none());
    }
}
