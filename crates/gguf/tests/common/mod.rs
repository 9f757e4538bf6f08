//! Shared helpers for the integration tests: asset locations and the gguf-py oracle.
#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use shuku_testkit::{asset, assets_dir, python, shared, shared_dir};

/// Runs `script` with gguf-py; returns stdout. Panics with stderr on failure.
pub fn run_python(script: &str, args: &[&Path]) -> String {
    let args: Vec<String> = args.iter().map(|p| p.display().to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    shuku_testkit::run_python(script, &args)
}

/// gguf-py's view of a file as JSON: keys (name, value type ids, scalar value or array length)
/// and tensors (name, type id, ne dims, absolute offset, n_bytes, position-weighted byte sum).
pub const GGUF_PY_DUMP: &str = r#"
import sys, json
import numpy as np
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
keys = []
for name, f in r.fields.items():
    if name.startswith('GGUF.'):
        continue
    v = f.contents()
    if isinstance(v, list):
        v = {'len': len(v)}
    keys.append([name, [int(t) for t in f.types], v])
tensors = []
for t in r.tensors:
    b = np.asarray(t.data).view(np.uint8).reshape(-1)
    w = np.arange(1, b.size + 1, dtype=np.uint64)
    with np.errstate(over='ignore'):
        s = int(np.sum(b.astype(np.uint64) * w, dtype=np.uint64))
    tensors.append([t.name, int(t.tensor_type), [int(x) for x in t.shape], int(t.data_offset), int(t.n_bytes), s])
print(json.dumps({'keys': keys, 'tensors': tensors}))
"#;

/// The same checksum as [`GGUF_PY_DUMP`].
pub fn weighted_sum(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
        acc.wrapping_add(u64::from(b).wrapping_mul(i as u64 + 1))
    })
}

/// Minimal little-endian GGUF byte builder for hand-made (often malformed) files.
#[derive(Default, Clone)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn new() -> Self {
        Bytes(Vec::new())
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(self, v: u8) -> Self {
        self.raw(&[v])
    }
    pub fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn f32(self, v: f32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// Magic, version, counts.
    pub fn header(n_tensors: u64, n_kv: u64) -> Self {
        Bytes::new().raw(b"GGUF").u32(3).u64(n_tensors).u64(n_kv)
    }
    /// A key with a u32 value.
    pub fn kv_u32(self, k: &str, v: u32) -> Self {
        self.str(k).u32(4).u32(v)
    }
    /// A tensor info.
    pub fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `a`.
    pub fn align(mut self, a: usize) -> Self {
        while !self.0.len().is_multiple_of(a) {
            self.0.push(0);
        }
        self
    }
    pub fn zeros(mut self, n: usize) -> Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}
