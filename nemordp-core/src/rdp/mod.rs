//! RDP: the readiness probe that speaks the protocol's first exchange, and the `.rdp` file
//! writer.

pub mod file;
pub mod probe;

pub use file::RdpFile;
pub use probe::{Negotiation, ProbeOutcome, RdpProbe, TcpRdpProbe};
