//! A readiness probe that speaks RDP's first exchange: an X.224 Connection Request carrying an
//! RDP Negotiation Request ([MS-RDPBCGR] 2.2.1.1), accepting only a valid X.224 Connection
//! Confirm ([MS-RDPBCGR] 2.2.1.2) with a negotiation response or failure. Silence, bytes that
//! are not TPKT, or a closed socket mean "not RDP yet".
//!
//! The [`RdpProbe`] trait lets paused-clock tests fake the network.

use std::{fmt, net::SocketAddr, time::Duration};

use async_trait::async_trait;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// TPKT + X.224 Connection Request + RDP_NEG_REQ asking for TLS | CredSSP.
pub const CONNECTION_REQUEST: [u8; 19] = [
    0x03, 0x00, 0x00, 0x13, // TPKT v3, length 19
    0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00,
    0x00, // X.224 CR: LI 14, CR code, dst ref, src ref, class 0
    0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00, // RDP_NEG_REQ: TLS | HYBRID
];

/// Protocol bits of `selectedProtocol` / `requestedProtocols`.
pub mod protocol {
    /// Standard RDP security.
    pub const RDP: u32 = 0;
    /// TLS.
    pub const SSL: u32 = 0x1;
    /// CredSSP (NLA).
    pub const HYBRID: u32 = 0x2;
    /// RDSTLS.
    pub const RDSTLS: u32 = 0x4;
    /// CredSSP with Early User Authorization Result PDU.
    pub const HYBRID_EX: u32 = 0x8;
}

/// What a server answered in its Connection Confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// RDP_NEG_RSP: the server picked this protocol (see [`protocol`]).
    Selected(u32),
    /// RDP_NEG_FAILURE with its failure code (e.g. 5 = HYBRID required): still an RDP server.
    Failure(u32),
    /// A Connection Confirm without negotiation data (very old servers).
    Legacy,
}

impl Negotiation {
    /// True when the server selected CredSSP, i.e. Network Level Authentication.
    pub fn is_nla(self) -> bool {
        matches!(self, Self::Selected(p) if p & (protocol::HYBRID | protocol::HYBRID_EX) != 0)
    }
}

/// Why bytes were not a Connection Confirm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotRdp(pub &'static str);

/// The TPKT packet length announced by a 4-byte header, or why the header is not TPKT.
pub fn tpkt_length(header: [u8; 4]) -> Result<usize, NotRdp> {
    if header[0] != 0x03 || header[1] != 0x00 {
        return Err(NotRdp("not a TPKT header"));
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if !(11..=1024).contains(&len) {
        return Err(NotRdp("implausible TPKT length"));
    }
    Ok(len)
}

/// Parses one whole TPKT packet as an X.224 Connection Confirm.
pub fn parse_connection_confirm(packet: &[u8]) -> Result<Negotiation, NotRdp> {
    let header: [u8; 4] = packet
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or(NotRdp("short packet"))?;
    let len = tpkt_length(header)?;
    if packet.len() != len {
        return Err(NotRdp("TPKT length does not match the packet"));
    }
    let x224 = &packet[4..];
    let li = usize::from(x224[0]);
    if li + 1 != x224.len() || li < 6 {
        return Err(NotRdp("X.224 length indicator does not match"));
    }
    if x224[1] & 0xf0 != 0xd0 {
        return Err(NotRdp("not an X.224 Connection Confirm"));
    }
    // Bytes 2..6 are the references (servers differ: do not check), byte 6 the class.
    let neg = &x224[7..];
    match neg {
        [] => Ok(Negotiation::Legacy),
        [kind, _flags, l0, l1, v0, v1, v2, v3] => {
            if u16::from_le_bytes([*l0, *l1]) != 8 {
                return Err(NotRdp("negotiation length is not 8"));
            }
            let value = u32::from_le_bytes([*v0, *v1, *v2, *v3]);
            match kind {
                0x02 => Ok(Negotiation::Selected(value)),
                0x03 => Ok(Negotiation::Failure(value)),
                _ => Err(NotRdp("unknown negotiation type")),
            }
        }
        _ => Err(NotRdp("malformed negotiation data")),
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// An RDP server answered.
    Rdp(Negotiation),
    /// Something answered (or accepted and closed) that is not RDP (yet).
    NotRdp(String),
    /// Nothing to talk to: refused, unroutable or timed out connecting.
    Unreachable(String),
}

impl ProbeOutcome {
    /// True for [`ProbeOutcome::Rdp`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Rdp(_))
    }
}

/// Checks whether an RDP server answers at an address.
#[async_trait]
#[auto_impl::auto_impl(&, Arc, Box)]
pub trait RdpProbe: fmt::Debug + Send + Sync + 'static {
    /// Probes `addr` once. Never errors: every failure is an outcome.
    async fn probe(&self, addr: SocketAddr) -> ProbeOutcome;
}

/// The real probe over TCP.
#[derive(Debug, Clone, Copy)]
pub struct TcpRdpProbe {
    connect_timeout: Duration,
    reply_timeout: Duration,
}

impl Default for TcpRdpProbe {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(5),
        }
    }
}

impl TcpRdpProbe {
    /// A probe with 5-second connect and reply timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets both timeouts.
    #[must_use]
    pub fn with_timeouts(mut self, connect: Duration, reply: Duration) -> Self {
        self.connect_timeout = connect;
        self.reply_timeout = reply;
        self
    }

    async fn exchange(&self, stream: &mut TcpStream) -> ProbeOutcome {
        if let Err(e) = stream.write_all(&CONNECTION_REQUEST).await {
            return ProbeOutcome::NotRdp(format!("write failed: {e}"));
        }
        let mut header = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut header).await {
            return ProbeOutcome::NotRdp(format!("no reply: {e}"));
        }
        let len = match tpkt_length(header) {
            Ok(len) => len,
            Err(e) => return ProbeOutcome::NotRdp(e.to_string()),
        };
        let mut packet = vec![0u8; len];
        packet[..4].copy_from_slice(&header);
        if let Err(e) = stream.read_exact(&mut packet[4..]).await {
            return ProbeOutcome::NotRdp(format!("truncated reply: {e}"));
        }
        match parse_connection_confirm(&packet) {
            Ok(n) => ProbeOutcome::Rdp(n),
            Err(e) => ProbeOutcome::NotRdp(e.to_string()),
        }
    }
}

#[async_trait]
impl RdpProbe for TcpRdpProbe {
    async fn probe(&self, addr: SocketAddr) -> ProbeOutcome {
        let mut stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => return ProbeOutcome::Unreachable("connect timed out".into()),
                Ok(Err(e)) => return ProbeOutcome::Unreachable(e.to_string()),
                Ok(Ok(s)) => s,
            };
        match tokio::time::timeout(self.reply_timeout, self.exchange(&mut stream)).await {
            Ok(outcome) => outcome,
            Err(_) => ProbeOutcome::NotRdp("no reply before the timeout".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_replies_seen_from_real_servers() {
        let xrdp = [
            0x03, 0, 0, 0x13, 0x0e, 0xd0, 0, 0, 0x12, 0x34, 0, 0x02, 0x01, 0x08, 0, 0x01, 0, 0, 0,
        ];
        assert_eq!(
            parse_connection_confirm(&xrdp),
            Ok(Negotiation::Selected(protocol::SSL))
        );
        let shadow_nla = [
            0x03, 0, 0, 0x13, 0x0e, 0xd0, 0, 0, 0, 0, 0, 0x02, 0x03, 0x08, 0, 0x02, 0, 0, 0,
        ];
        let n = parse_connection_confirm(&shadow_nla).unwrap();
        assert!(n.is_nla());
        let failure = [
            0x03, 0, 0, 0x13, 0x0e, 0xd0, 0, 0, 0, 0, 0, 0x03, 0, 0x08, 0, 0x05, 0, 0, 0,
        ];
        assert_eq!(
            parse_connection_confirm(&failure),
            Ok(Negotiation::Failure(5))
        );
        let legacy = [0x03, 0, 0, 0x0b, 0x06, 0xd0, 0, 0, 0, 0, 0];
        assert_eq!(parse_connection_confirm(&legacy), Ok(Negotiation::Legacy));
    }

    #[test]
    fn rejects_non_rdp() {
        assert!(parse_connection_confirm(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse_connection_confirm(b"220 smtp ready\r\n").is_err());
        // A Connection *Request* echoed back is not a confirm.
        assert!(parse_connection_confirm(&CONNECTION_REQUEST).is_err());
        // Wrong lengths.
        let mut bad = [
            0x03, 0, 0, 0x13, 0x0e, 0xd0, 0, 0, 0, 0, 0, 0x02, 0, 0x09, 0, 0x02, 0, 0, 0,
        ];
        assert!(parse_connection_confirm(&bad).is_err());
        bad[13] = 0x08;
        bad[4] = 0x0d;
        assert!(parse_connection_confirm(&bad).is_err());
        assert!(parse_connection_confirm(&[]).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_connection_confirm(&bytes);
        }

        #[test]
        fn accepted_packets_are_confirms(rest in proptest::collection::vec(any::<u8>(), 7..16)) {
            let mut p = vec![0x03, 0x00, 0x00, u8::try_from(rest.len() + 5).unwrap(), u8::try_from(rest.len()).unwrap()];
            p.extend_from_slice(&rest);
            if parse_connection_confirm(&p).is_ok() {
                prop_assert_eq!(p[5] & 0xf0, 0xd0);
            }
        }
    }
}
