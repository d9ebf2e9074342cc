//! Arbitrary bytes into the control-message decoder, as the control server reads them:
//! a length prefix, then a postcard body. Decoding must never panic, and whatever
//! decodes must re-encode to a message that decodes to the same value: compared by its
//! encoding, since a float field (a probe's Mbit/s) may hold a NaN, unequal to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnet_control::proto::{self, RequestEnvelope, ResponseEnvelope, LEN_PREFIX};

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.get(..LEN_PREFIX) {
        let _ = proto::decode_len(prefix.try_into().expect("4 bytes"));
    }
    if let Ok(req) = proto::decode_body::<RequestEnvelope>(data) {
        let bytes = proto::encode(&req);
        let again: RequestEnvelope = proto::decode_body(&bytes[LEN_PREFIX..]).expect("re-decodes");
        assert_eq!(proto::encode(&again), bytes, "{again:?} != {req:?}");
    }
    if let Ok(resp) = proto::decode_body::<ResponseEnvelope>(data) {
        let bytes = proto::encode(&resp);
        let again: ResponseEnvelope = proto::decode_body(&bytes[LEN_PREFIX..]).expect("re-decodes");
        assert_eq!(proto::encode(&again), bytes, "{again:?} != {resp:?}");
    }
});
