//! Any byte string must parse to a file or to an error, never a panic, an
//! out-of-bounds read or a runaway allocation; whatever parses must hand out
//! only in-bounds tensor data and typed metadata.
#![no_main]

use hearth_gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::from_bytes(data.to_vec()) {
        for t in f.tensors() {
            let bytes = f.tensor_data(t);
            assert_eq!(bytes.len(), t.range.len());
        }
        for (k, _) in f.metadata() {
            let _ = f.get_str(k);
            let _ = f.get_u32(k);
            let _ = f.get_array(k);
        }
    }
});
