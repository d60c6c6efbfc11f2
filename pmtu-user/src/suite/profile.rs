//! What REMOTE's OS is expected to do where the RFCs leave room, and how to ask it about its
//! state. Every value that differs between systems lives here, never in a story; a value
//! unknown for a system is `None`, and the scenario then reports what it measured without
//! judging it. The RFC floor (no IPv6 path MTU below 1280, no atomic fragments, no ignored
//! valid Packet Too Big) is checked in every profile by the stories themselves.
use serde::Serialize;

/// REMOTE's operating system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    Linux,
    Openbsd,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Profile {
    pub name: ProfileName,
    /// tcpfrag6: IP length of the retransmit after a PTB below 1280. Linux's TCP ignores such
    /// PTBs (RFC 8021 removed atomic fragments), so it keeps sending 1500.
    pub tcpfrag6_retransmit: u16,
    /// gateway6: how REMOTE's PMTU-carrying route state is removed.
    pub gateway6_reset: Gateway6Reset,
    /// pmtu, pmtu6: the lowest retransmission timeout REMOTE uses, when its real one cannot be
    /// read (Linux: TCP_RTO_MIN, 200 ms).
    pub min_rto_ms: Option<u64>,
    /// tiny: what REMOTE resends after a frag-needed announcing less than 68 (or 0, "no MTU"):
    /// Linux clamps to net.ipv4.route.min_pmtu (552) and locks it, clearing DF.
    pub tiny_resend: Option<TinyResend>,
    /// persist, persist6: the MSS of a new connection's SYN+ACK toward a host whose path MTU is
    /// 1300, [IPv4, IPv6]. Linux 6.18 derives it from the path MTU (1260 / 1240); upstream
    /// packetdrill's tcp_advmss_pmtu tests expect 1460 for other versions.
    pub persist_synack_mss: Option<[u16; 2]>,
    /// udp: whether REMOTE sets DF on UDP replies (needed to discover anything at all).
    pub udp_df: Option<bool>,
    /// window, window6: REMOTE's counter of ICMP errors quoting a sequence number outside the
    /// send window (Linux: TcpExtOutOfWindowIcmps in /proc/net/netstat).
    pub out_of_window_counter: Option<&'static str>,
    /// expire, expire6: the sysctls holding the lifetime of a learned path MTU, [IPv4, IPv6].
    pub pmtu_lifetime_sysctl: Option<[&'static str; 2]>,
    /// blackhole, blackhole6: REMOTE's TCP black-hole detection (RFC 4821), when known.
    pub blackhole: Option<BlackholeDetection>,
}

/// tiny's expectation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TinyResend {
    pub ip_len: u16,
    pub df: bool,
}

/// How REMOTE detects a black hole and what it falls back to.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BlackholeDetection {
    /// The sysctl that turns it on, and the value that does.
    pub sysctl: &'static str,
    pub on: &'static str,
    /// The IP length REMOTE first falls back to, [IPv4, IPv6] (Linux: tcp_base_mss 1024 plus
    /// the headers, 1064 / 1084).
    pub fallback_ip_len: [u16; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Gateway6Reset {
    /// Linux keeps IPv6 PMTU exceptions on the route: delete and re-add the FAKE_NET6 route.
    ReaddFakeRoute,
    /// OpenBSD: delete the host route to LOCAL_ADDR6; the dynamic PMTU route must survive.
    DeleteGatewayHostRoute,
}

impl Profile {
    pub fn get(name: ProfileName) -> Profile {
        match name {
            ProfileName::Linux => Profile {
                name,
                tcpfrag6_retransmit: 1500,
                gateway6_reset: Gateway6Reset::ReaddFakeRoute,
                min_rto_ms: Some(200),
                tiny_resend: Some(TinyResend {
                    ip_len: 552,
                    df: false,
                }),
                persist_synack_mss: Some([1260, 1240]),
                udp_df: Some(true),
                out_of_window_counter: Some("TcpExtOutOfWindowIcmps"),
                pmtu_lifetime_sysctl: Some([
                    "net.ipv4.route.mtu_expires",
                    "net.ipv6.route.mtu_expires",
                ]),
                blackhole: Some(BlackholeDetection {
                    sysctl: "net.ipv4.tcp_mtu_probing",
                    on: "1",
                    fallback_ip_len: [1064, 1084],
                }),
            },
            ProfileName::Openbsd => Profile {
                name,
                tcpfrag6_retransmit: 1500,
                gateway6_reset: Gateway6Reset::DeleteGatewayHostRoute,
                min_rto_ms: None,
                tiny_resend: None,
                persist_synack_mss: None,
                udp_df: None,
                out_of_window_counter: None,
                // One timeout for both families (ip_mtudisc_timeout).
                pmtu_lifetime_sysctl: Some([
                    "net.inet.ip.mtudisctimeout",
                    "net.inet.ip.mtudisctimeout",
                ]),
                blackhole: None,
            },
        }
    }
}
