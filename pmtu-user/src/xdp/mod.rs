//! The user side of the kernel boundary: the responder (load, pin, attach, rules, counters,
//! test runs) and the events it reports.
pub mod events;
pub mod responder;
pub mod rules;
