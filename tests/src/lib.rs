pub mod frames;
pub mod netns;
pub mod pcap;
pub mod support;
