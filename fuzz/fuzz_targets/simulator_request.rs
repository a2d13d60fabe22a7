//! The ECS simulator's reading of requests, and the sign-then-verify round
//! trip: see `copyimage_fuzz_support::check_simulator_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copyimage_fuzz_support::check_simulator_request(data);
});
