//! Fuzzes the pure GGUF parser, then every tensor view of the in-memory file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shuku_gguf::reader::view_in;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = shuku_gguf::parse(data) else {
        return;
    };
    for info in &header.tensor_infos {
        // Validation promised every tensor lies inside the input.
        let view = view_in(data, header.data_offset, info).expect("validated tensor in bounds");
        if let Some(n) = info.n_bytes() {
            assert_eq!(view.bytes.len() as u64, n);
        }
        let _ = info.shape();
        let _ = info.bits_per_weight();
    }
    for (k, v) in header.metadata.iter() {
        let _ = (k.len(), v.as_u32(), v.as_str(), v.as_string_array());
    }
});
