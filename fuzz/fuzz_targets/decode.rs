//! Fuzzes the packet decoder, and assembly of whatever it decodes: any bytes, any link
//! type, must give a packet, a skip or an error, never a panic.
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tcptop::capture::assemble::Assembler;
use tcptop::capture::decode::{decode, LinkType};
use tcptop::collector::Filters;

const LINKS: [LinkType; 7] = [
    LinkType::Pktap,
    LinkType::LinuxSll2,
    LinkType::LinuxSll,
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, frame)) = input.split_first() else { return };
    let link = LINKS[usize::from(selector) % LINKS.len()];
    // The wire may have carried more than the capture kept (snaplen).
    let wire_len = frame.len() as u32 + u32::from(selector >> 3) * 1021;
    if let Ok(Some(packet)) = decode(link, frame, wire_len) {
        let mut assembler = Assembler::new(HashSet::new(), Filters::default());
        assembler.packet(&packet, Duration::ZERO, Duration::ZERO);
        assembler.packet(&packet, Duration::from_secs(1), Duration::from_secs(1));
        assembler.sample();
    }
});
