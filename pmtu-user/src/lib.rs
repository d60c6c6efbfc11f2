//! pmtu: a Path MTU Discovery regression suite around an XDP responder.
//!
//! Floors, each importing only from floors below it (the `pmtu` binary's `cli/` sits on top and
//! nothing imports it):
//! - `scenarios/`: one story per file, and the registry;
//! - `suite/`: the controller (context, records, event hub, fake TCP/UDP, reports, capture);
//! - `lab/`: the built-in labs (plan, namespaces, bpffs, REMOTE's services, status);
//! - `xdp/`: the user side of the XDP program (responder, rules, events);
//! - `net/`, `remote`, `wire`, `config`, `serve`, `signals`: plumbing with no knowledge of the
//!   floors above.
pub mod config;
pub mod lab;
pub mod net;
pub mod remote;
pub mod scenarios;
pub mod serve;
pub mod signals;
pub mod suite;
pub mod wire;
pub mod xdp;
