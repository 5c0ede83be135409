pub mod frames;
pub mod live;
pub mod loadtest;
pub mod netns;
pub mod pcap;
pub mod reference;
pub mod sample;
pub mod support;
