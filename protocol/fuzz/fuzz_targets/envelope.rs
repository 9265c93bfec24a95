//! Fuzzes the publish envelope decoder; an accepted envelope must survive encode → decode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate_protocol::{Envelope, EnvelopeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = EnvelopeLimits::default();
    if let Ok(env) = Envelope::decode(data, &limits) {
        let again = Envelope::decode(&env.encode(), &limits).expect("an encoded envelope decodes");
        assert_eq!(again.encode(), env.encode());
    }
});
