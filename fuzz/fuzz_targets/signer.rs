//! The signers' percent-encoding and canonicalization against the reference
//! model and the simulator: see `copyimage_fuzz_support::check_signer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copyimage_fuzz_support::check_signer(data);
});
