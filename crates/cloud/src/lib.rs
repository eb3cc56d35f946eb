//! The cloud seams (compute, network, alarms, agent client) and the fault-injecting fake cloud.
