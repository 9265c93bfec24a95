//! The close codes of SPEC §4 and the RFC 6455 rule for which codes may appear on the wire.

/// Why the server closed a session. The numbers are the contract; clients decide whether to
/// reconnect by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// The client or the server is done.
    Normal = 1000,
    /// The server is going away for good.
    GoingAway = 1001,
    /// The peer broke RFC 6455 (reserved bits, bad opcodes, unmasked frames, …).
    Protocol = 1002,
    /// Text that is not UTF-8.
    InvalidPayload = 1007,
    /// Token expired or the session is no longer allowed.
    Policy = 1008,
    /// An inbound frame or message above the limit.
    TooLarge = 1009,
    /// A server fault.
    Internal = 1011,
    /// The node is restarting or draining: reconnect, to any node.
    Restarting = 1012,
    /// The node is overloaded: reconnect later.
    Overloaded = 1013,
    /// Disconnected by the admin API: do not reconnect automatically.
    AdminDisconnect = 4000,
    /// The session could not keep up with its outbound queue: reconnect and resume.
    SlowConsumer = 4001,
    /// Nothing was heard from the client within 2.5 heartbeats.
    HeartbeatTimeout = 4002,
    /// The client sent frames faster than the rate limit.
    RateLimited = 4008,
}

impl CloseCode {
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// A short stable label, used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Normal => "1000",
            Self::GoingAway => "1001",
            Self::Protocol => "1002",
            Self::InvalidPayload => "1007",
            Self::Policy => "1008",
            Self::TooLarge => "1009",
            Self::Internal => "1011",
            Self::Restarting => "1012",
            Self::Overloaded => "1013",
            Self::AdminDisconnect => "4000",
            Self::SlowConsumer => "4001",
            Self::HeartbeatTimeout => "4002",
            Self::RateLimited => "4008",
        }
    }
}

/// Whether a peer may send `code` in a Close frame (RFC 6455 §7.4 and the IANA registry):
/// 1000–1003, 1007–1014 and 3000–4999. 1004–1006 and 1015 are reserved for local use.
pub fn is_valid_wire_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
