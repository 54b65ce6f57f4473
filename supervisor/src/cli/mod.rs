//! The commands of the CLI that are clients or drivers of the rooms below: `start`
//! (followed or `--detach`), `status`, `stop`, `restart`, `logs`, `shutdown` (`ops`) and `bench`. The top room.

pub mod bench;
pub mod bench_stages;
pub mod finish_outputs;
pub mod ops;
pub mod show_plan;
pub mod start;
