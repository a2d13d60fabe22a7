//! An ECS answer (status, headers, body) through the client's response
//! parser: see `copyimage_fuzz_support::check_ecs_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    copyimage_fuzz_support::check_ecs_response(data);
});
