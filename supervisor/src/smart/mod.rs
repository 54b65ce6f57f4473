//! Smart: profiles (t = f(batch, input size)), the planner that picks batch sizes,
//! replicas and threads for a quota within the granted resources, the queueing model
//! and discrete-event simulation that predict its QoS, admission control, and the
//! online controller of `balance`.
//!
//! Everything here is pure (no I/O, no clock): the caller loads the app and the
//! profiles (`profiles/<machine>.json`), and prints or applies what comes back.
//! Entry points: [`admit`] (start), [`plans`] (plan: all three strategies),
//! [`Profiles`] (profile), [`simulate`] (check a plan), [`online::Controller`].

pub mod admission;
pub mod brute;
mod contention;
pub mod dag;
mod evaluate;
pub mod model;
pub mod online;
pub mod planner;
pub mod profile;
pub mod qos;
mod queueing;
pub mod sim;
mod sim_cpu;
pub mod strategies;
#[cfg(test)]
mod testkit;

#[allow(unused_imports)] // the supervisor's commands use these as they land
pub use admission::{admit, refusal, Refusal, CORES_STEP};
#[allow(unused_imports)]
pub use model::{
    Arrivals, Model, ModelError, Prediction, Resources, StageConfig, Workload, CPU_HEADROOM,
};
#[allow(unused_imports)]
pub use planner::{Plan, PlanOptions, Plans};
#[allow(unused_imports)]
pub use profile::{path_loadings, Fit, ProfileError, Profiles, StayMoments, TaskProfile};
#[allow(unused_imports)]
pub use qos::{required_rate, Qos, Shortfall};
#[allow(unused_imports)]
pub use sim::{simulate, SimConfig, SimResult};
#[allow(unused_imports)]
pub use strategies::plans;
