//! pmtu: a Path MTU Discovery regression suite around an XDP responder.
//!
//! The `pmtu` binary (src/main.rs) is a thin CLI over these modules.
pub mod bench;
pub mod capture;
pub mod event;
pub mod lab;
pub mod netns;
pub mod rawsock;
pub mod respond;
pub mod responder;
pub mod scenarios;
pub mod serve;
pub mod signals;
pub mod suite;
pub mod topology;
pub mod wire;
