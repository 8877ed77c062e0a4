#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cidcache::fuzzing::ipfs_car(data));
