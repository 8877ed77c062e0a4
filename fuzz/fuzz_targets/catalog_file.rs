#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cidcache::fuzzing::catalog_file(data));
