//! The libbpf-rs skeleton that build.rs generates from src/bpf/tcptop.bpf.c.
#![allow(clippy::all, non_camel_case_types, dead_code)]
include!(concat!(env!("OUT_DIR"), "/tcptop.skel.rs"));
