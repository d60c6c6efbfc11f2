//! Host plumbing with no PMTU knowledge: network namespaces, rtnetlink, sysctls, service probes,
//! /proc, and the raw AF_PACKET socket the fake host sends through.
pub mod netns;
pub mod probe;
pub mod procfs;
pub mod qdisc;
pub mod rawsock;
pub mod rtnl;
pub mod sysctl;
