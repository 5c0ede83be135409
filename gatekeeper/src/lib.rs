//! The gatekeeper controller: the policy file, the XDP datapath that enforces
//! it, and the tools built on them.

pub mod clock;
pub mod datapath;
pub mod describe;
pub mod generator;
pub mod live;
pub mod metrics;
pub mod policy;
pub mod replay;
pub mod run;
mod sys;
pub mod table;

/// An error and its causes on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
