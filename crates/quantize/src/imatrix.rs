//! Importance matrices: per-column mean squared activations of each weight's input, in
//! llama.cpp's two file formats.
//!
//! * GGUF (what `llama-imatrix` writes today): `<tensor>.in_sum2` (Σx², F32, `[ne0, n_mat]`),
//!   `<tensor>.counts` (tokens seen, F32, `[1, n_mat]`), `imatrix.datasets`, `imatrix.chunk_count`,
//!   `imatrix.chunk_size`.
//! * The legacy `.dat`: `i32 n_entries`, then per entry `i32 name_len, name, i32 ncall, i32 nval,
//!   f32[nval]` (already divided by the token count and multiplied by `ncall`), then optionally
//!   `i32 chunk_count, i32 len, dataset`.
//!
//! Both load to the same normalised values llama-quantize computes (`load_imatrix` in
//! `tools/quantize`): Σx² / count, in f32, 1 where nothing was counted. Writing is GGUF only,
//! through shuku-gguf's atomic writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shuku_gguf::{Array, GgmlType, GgufFile, GgufWriter, Metadata, TensorDesc, Value};

use crate::error::{QuantizeError, Result};

/// `imatrix.datasets`.
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// `imatrix.chunk_count`.
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// `imatrix.chunk_size`.
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";

/// Longest entry list or value count accepted from a legacy file (a bound before allocation).
const MAX_LEGACY_ENTRIES: usize = 1 << 20;

/// Raw statistics of one weight: Σx² per input column and the token count, per matrix (one
/// matrix for a dense weight, one per expert for a stacked MoE weight).
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Σx², `n_mat × n_cols` values.
    pub sums: Vec<f32>,
    /// Tokens counted, one per matrix.
    pub counts: Vec<f32>,
}

impl ImatrixEntry {
    /// The importance weights llama-quantize uses: Σx² / count per matrix, 1 where the count is 0.
    pub fn weights(&self) -> Vec<f32> {
        let n_mat = self.counts.len().max(1);
        let ne0 = self.sums.len() / n_mat;
        let mut out = vec![1.0; self.sums.len()];
        for (j, &count) in self.counts.iter().enumerate() {
            // llama.cpp reads the count with lround, then divides in f32.
            let count = count.round() as i64 as f32;
            if count > 0.0 {
                for i in 0..ne0 {
                    out[j * ne0 + i] = self.sums[j * ne0 + i] / count;
                }
            }
        }
        out
    }
}

/// An importance matrix: entries by weight name, with where it came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Imatrix {
    /// Entries by GGUF tensor name.
    pub entries: BTreeMap<String, ImatrixEntry>,
    /// The calibration files it was computed on.
    pub datasets: Vec<String>,
    /// Chunks of text processed.
    pub chunk_count: u32,
    /// Tokens per chunk (0 when unknown, as in the legacy format).
    pub chunk_size: u32,
}

impl Imatrix {
    /// Reads a GGUF or legacy `.dat` importance matrix (told apart by the GGUF magic).
    pub fn load(path: impl AsRef<Path>) -> Result<Imatrix> {
        let path = path.as_ref();
        let io = |source| QuantizeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut magic = [0u8; 4];
        let n = std::io::Read::read(&mut std::fs::File::open(path).map_err(io)?, &mut magic)
            .map_err(io)?;
        if n == 4 && &magic == b"GGUF" {
            return Self::load_gguf(path);
        }
        let bytes = std::fs::read(path).map_err(io)?;
        parse_legacy(&bytes).map_err(|message| QuantizeError::BadImatrix {
            file: path.to_path_buf(),
            message,
        })
    }

    fn load_gguf(path: &Path) -> Result<Imatrix> {
        let bad = |message: String| QuantizeError::BadImatrix {
            file: path.to_path_buf(),
            message,
        };
        let file = GgufFile::open(path).map_err(|e| bad(e.to_string()))?;
        if file.tensor_infos().is_empty() {
            return Err(bad("no entries".into()));
        }
        let datasets = match file.metadata().get(KEY_DATASETS) {
            Some(Value::Array(Array::String(s))) => s.clone(),
            Some(_) => return Err(bad(format!("{KEY_DATASETS} is not a string array"))),
            None => return Err(bad(format!("missing {KEY_DATASETS}"))),
        };
        let chunk_count = file
            .opt_u32(KEY_CHUNK_COUNT)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad(format!("missing {KEY_CHUNK_COUNT}")))?;
        let chunk_size = file
            .opt_u32(KEY_CHUNK_SIZE)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad(format!("missing {KEY_CHUNK_SIZE}")))?;
        let mut sums: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut counts: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for view in file.tensors() {
            let view = view.map_err(|e| bad(e.to_string()))?;
            let name = &view.info.name;
            let (base, is_sum) = if let Some(b) = name.strip_suffix(".in_sum2") {
                (b, true)
            } else if let Some(b) = name.strip_suffix(".counts") {
                (b, false)
            } else {
                continue;
            };
            if view.info.ttype.known() != Some(GgmlType::F32) {
                return Err(bad(format!("{name} is not F32")));
            }
            let values: Vec<f32> = view
                .bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("{name} holds a non-finite value")));
            }
            let map = if is_sum { &mut sums } else { &mut counts };
            map.insert(base.to_string(), values);
        }
        let mut entries = BTreeMap::new();
        for (name, s) in sums {
            let c = counts
                .remove(&name)
                .ok_or_else(|| bad(format!("{name}.in_sum2 has no {name}.counts")))?;
            if c.is_empty() || s.len() % c.len() != 0 {
                return Err(bad(format!(
                    "{name}: {} sums do not split into {} matrices",
                    s.len(),
                    c.len()
                )));
            }
            entries.insert(name, ImatrixEntry { sums: s, counts: c });
        }
        if let Some(name) = counts.keys().next() {
            return Err(bad(format!("{name}.counts has no {name}.in_sum2")));
        }
        Ok(Imatrix {
            entries,
            datasets,
            chunk_count,
            chunk_size,
        })
    }

    /// The importance weights of `tensor` (Σx² / count), if the matrix has it.
    pub fn weights(&self, tensor: &str) -> Option<Vec<f32>> {
        self.entries.get(tensor).map(ImatrixEntry::weights)
    }

    /// Writes the matrix in llama.cpp's GGUF imatrix format (temp file, then rename).
    pub fn save(&self, path: impl AsRef<Path>, overwrite: bool) -> Result<PathBuf> {
        let mut meta = Metadata::new();
        meta.insert("general.type", "imatrix");
        meta.insert(
            KEY_DATASETS,
            Value::Array(Array::String(self.datasets.clone())),
        );
        meta.insert(KEY_CHUNK_COUNT, Value::U32(self.chunk_count));
        meta.insert(KEY_CHUNK_SIZE, Value::U32(self.chunk_size));
        let mut descs = Vec::new();
        for (name, e) in &self.entries {
            let n_mat = e.counts.len() as u64;
            let ne0 = e.sums.len() as u64 / n_mat.max(1);
            // ggml stores dimensions without trailing 1s (`ggml_n_dims`), as llama-imatrix's files.
            let (sums_dims, counts_dims) = if n_mat == 1 {
                (vec![ne0], vec![1])
            } else {
                (vec![ne0, n_mat], vec![1, n_mat])
            };
            descs.push(TensorDesc::new(
                format!("{name}.in_sum2"),
                sums_dims,
                GgmlType::F32,
            ));
            descs.push(TensorDesc::new(
                format!("{name}.counts"),
                counts_dims,
                GgmlType::F32,
            ));
        }
        let mut w =
            GgufWriter::options()
                .overwrite(overwrite)
                .create(path.as_ref(), &meta, descs)?;
        for (name, e) in &self.entries {
            w.write_tensor(&format!("{name}.in_sum2"), &f32_bytes(&e.sums))?;
            w.write_tensor(&format!("{name}.counts"), &f32_bytes(&e.counts))?;
        }
        Ok(w.finish()?)
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A little-endian reader over the legacy file that reports truncation instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {} reading {what}", self.pos))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn i32(&mut self, what: &str) -> std::result::Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len(&mut self, what: &str, min: i32) -> std::result::Result<usize, String> {
        let v = self.i32(what)?;
        if v < min || v as usize > MAX_LEGACY_ENTRIES * 64 {
            return Err(format!("{what} {v} is out of range"));
        }
        Ok(v as usize)
    }
}

/// `common_imatrix_load_legacy`, bounds-checked.
fn parse_legacy(bytes: &[u8]) -> std::result::Result<Imatrix, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let n_entries = c.len("entry count", 1)?;
    if n_entries > MAX_LEGACY_ENTRIES {
        return Err(format!("entry count {n_entries} is out of range"));
    }
    let mut entries = BTreeMap::new();
    for i in 0..n_entries {
        let len = c.len("name length", 0)?;
        let name = std::str::from_utf8(c.take(len, "name")?)
            .map_err(|_| format!("entry {i}: name is not UTF-8"))?
            .trim_end_matches('\0')
            .to_string();
        let ncall = c.i32("call count")?;
        let nval = c.len("value count", 1)?;
        let raw = c.take(nval * 4, "values")?;
        let sums: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if sums.iter().any(|v| !v.is_finite()) {
            return Err(format!("entry {name}: non-finite value"));
        }
        // Legacy values are (Σx² / tokens) · ncall; dividing by ncall gives the mean, as
        // llama-quantize does. Stored here as sums with count ncall, so `weights()` agrees.
        entries.insert(
            name,
            ImatrixEntry {
                sums,
                // llama-quantize keeps the raw values when ncall is 0.
                counts: vec![if ncall > 0 { ncall as f32 } else { 1.0 }],
            },
        );
    }
    let mut out = Imatrix {
        entries,
        ..Imatrix::default()
    };
    if c.pos < bytes.len() {
        out.chunk_count = c.i32("chunk count")?.max(0) as u32;
        if let Ok(len) = c.i32("dataset length") {
            if len > 0 {
                let name = c.take(len as usize, "dataset name")?;
                out.datasets.push(
                    String::from_utf8_lossy(name)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_bytes(entries: &[(&str, i32, &[f32])], tail: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        if let Some((chunks, ds)) = tail {
            b.extend(chunks.to_le_bytes());
            b.extend((ds.len() as i32).to_le_bytes());
            b.extend(ds.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_file_normalises_by_call_count() {
        let b = legacy_bytes(
            &[("blk.0.attn_q.weight", 4, &[8.0, 2.0])],
            Some((10, "w.txt")),
        );
        let m = parse_legacy(&b).unwrap();
        assert_eq!(m.weights("blk.0.attn_q.weight").unwrap(), vec![2.0, 0.5]);
        assert_eq!(m.chunk_count, 10);
        assert_eq!(m.datasets, vec!["w.txt".to_string()]);
    }

    #[test]
    fn truncated_legacy_file_is_an_error() {
        let b = legacy_bytes(&[("blk.0.attn_q.weight", 4, &[8.0, 2.0])], None);
        for cut in 0..b.len() {
            assert!(parse_legacy(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn zero_count_gives_unit_weights() {
        let e = ImatrixEntry {
            sums: vec![3.0, 4.0, 5.0, 6.0],
            counts: vec![0.0, 2.0],
        };
        assert_eq!(e.weights(), vec![1.0, 1.0, 2.5, 3.0]);
    }

    #[test]
    fn gguf_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imatrix.gguf");
        let mut m = Imatrix {
            datasets: vec!["calib.txt".into()],
            chunk_count: 3,
            chunk_size: 512,
            ..Imatrix::default()
        };
        m.entries.insert(
            "blk.0.ffn_down.weight".into(),
            ImatrixEntry {
                sums: vec![1.0, 2.0, 3.0],
                counts: vec![1536.0],
            },
        );
        m.save(&path, false).unwrap();
        assert_eq!(Imatrix::load(&path).unwrap(), m);
        assert!(m.save(&path, false).is_err(), "existing file kept");
    }
}
