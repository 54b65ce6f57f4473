//! Smart: profiles (t = f(batch, input size)), the planner that picks batch sizes,
//! replicas and threads for a quota within the granted resources, the queueing model
//! and discrete-event simulation that predict its QoS, and admission control. (The live
//! tuning of `balance` apps is `crate::plan::tuning`, from live metrics.)
//!
//! Everything here is pure (no I/O, no clock): the caller loads the app and the
//! profiles (`profiles/<machine>.json`), and prints or applies what comes back.
//! Entry points: [`admit`] (start), [`plans`] (plan: all three strategies),
//! [`Profiles`] (profile), [`sim::simulate`] (check a plan).

pub mod admission;
pub mod brute;
mod contention;
pub mod dag;
mod evaluate;
pub mod model;
pub mod planner;
pub mod profile;
pub mod qos;
mod queueing;
pub mod sim;
mod sim_cpu;
pub mod strategies;
#[cfg(test)]
mod testkit;

pub use admission::{admit, Refusal};
pub use model::{Arrivals, Resources, CPU_HEADROOM};
pub use planner::{Plan, PlanOptions, Plans};
pub use profile::{path_loadings, Profiles, StayMoments, TaskProfile};
pub use qos::Shortfall;
pub use strategies::plans;
