//! The signers' percent-encoding and canonicalization against the reference
//! model and the simulator: see `copyimage_canceller::fuzzing::check_signer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copyimage_canceller::fuzzing::check_signer(data);
});
