//! Smart: profiles (t = f(batch, input size)), the planner that picks batch sizes,
//! replicas and threads for a quota within the granted resources, the queueing model
//! and discrete-event simulation that predict its QoS, and admission control.
