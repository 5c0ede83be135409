pub mod frames;
pub mod pcap;
pub mod support;
