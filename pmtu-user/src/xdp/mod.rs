//! The user side of the kernel boundary: the responder (load, pin, attach, rules, counters,
//! test runs), the events it reports, and the benchmark's sender and answer counter.
pub mod events;
pub mod flood;
pub mod responder;
pub mod rules;
