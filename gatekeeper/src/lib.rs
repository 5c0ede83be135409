//! The gatekeeper controller: the policy file, the XDP datapath that enforces
//! it, and the tools built on them.

pub mod datapath;
pub mod describe;
pub mod policy;
pub mod replay;
mod sys;
