//! Secret, environment, metadata-service and STS answers through the
//! credential parsers: see `copyimage_fuzz_support::check_credentials`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copyimage_fuzz_support::check_credentials(data);
});
