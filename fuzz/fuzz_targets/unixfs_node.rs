#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cidcache::fuzzing::unixfs_node(data));
