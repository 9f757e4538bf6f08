//! Streaming GGUF v3 writer.
//!
//! The header (metadata + tensor infos with precomputed, aligned offsets) is written first, then
//! tensor data one tensor at a time, so a converter never holds more than one tensor in memory.
//! Output goes to a temporary file in the destination directory that is fsynced and atomically
//! renamed by [`GgufWriter::finish`]; if the writer is dropped before that (an error, a panic),
//! the temporary file is deleted and no half-written model is left behind.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::reader::{validate_shape, TensorInfo, DEFAULT_ALIGNMENT, MAX_NAME_LEN};
use crate::types::{GgmlType, TensorType};
use crate::value::{Array, Value};

/// A tensor to be written: name, dims in ggml order (ne\[0\] innermost) and type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDesc {
    /// Tensor name (at most 63 bytes).
    pub name: String,
    /// Dimensions, ggml order.
    pub dims: Vec<u64>,
    /// Element type.
    pub ttype: GgmlType,
}

impl TensorDesc {
    /// A descriptor from ggml-order dims.
    pub fn new(name: impl Into<String>, dims: Vec<u64>, ttype: GgmlType) -> Self {
        TensorDesc {
            name: name.into(),
            dims,
            ttype,
        }
    }

    /// A descriptor from a row-major (candle/PyTorch) shape, reversed into ggml order.
    pub fn from_shape(name: impl Into<String>, shape: &[usize], ttype: GgmlType) -> Self {
        Self::new(name, shape.iter().rev().map(|&d| d as u64).collect(), ttype)
    }

    /// Bytes of data this tensor must receive.
    pub fn n_bytes(&self) -> Option<u64> {
        let n = self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        self.ttype.bytes_for(n)
    }
}

/// Where the bytes go: a temp file (renamed on finish) or memory.
enum Sink {
    File {
        out: BufWriter<tempfile::NamedTempFile>,
        dest: PathBuf,
        overwrite: bool,
    },
    Vec(Vec<u8>),
}

/// Options for [`GgufWriter`]; start from [`GgufWriter::options`].
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    overwrite: bool,
    alignment: Option<u32>,
}

impl WriterOptions {
    /// Replace an existing output file (default: refuse with [`Error::OutputExists`]).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// Data alignment; default: `general.alignment` from the metadata, else 32.
    pub fn alignment(mut self, alignment: u32) -> Self {
        self.alignment = Some(alignment);
        self
    }

    /// Starts writing `path`. See [`GgufWriter::create`].
    pub fn create(
        self,
        path: impl AsRef<Path>,
        metadata: &Metadata,
        tensors: Vec<TensorDesc>,
    ) -> Result<GgufWriter> {
        let dest = path.as_ref().to_path_buf();
        if !self.overwrite && dest.exists() {
            return Err(Error::OutputExists { path: dest });
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".shuku-gguf-").suffix(".tmp");
        // Temporary files are private by default; the GGUF is an ordinary file (0666 less umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder.tempfile_in(&dir).map_err(|e| Error::io(&dir, e))?;
        let sink = Sink::File {
            out: BufWriter::with_capacity(1 << 20, tmp),
            dest: dest.clone(),
            overwrite: self.overwrite,
        };
        GgufWriter::start(sink, metadata, tensors, self.alignment).map_err(|e| e.in_file(dest))
    }

    /// Starts writing into memory; [`GgufWriter::finish_to_vec`] returns the bytes.
    pub fn create_in_memory(
        self,
        metadata: &Metadata,
        tensors: Vec<TensorDesc>,
    ) -> Result<GgufWriter> {
        GgufWriter::start(Sink::Vec(Vec::new()), metadata, tensors, self.alignment)
    }
}

/// Streaming GGUF v3 writer. See the module docs.
pub struct GgufWriter {
    sink: Sink,
    tensors: Vec<(TensorDesc, u64)>,
    next: usize,
    alignment: u64,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("tensors", &self.tensors.len())
            .field("next", &self.next)
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl GgufWriter {
    /// Default options (no overwrite, alignment from metadata or 32).
    pub fn options() -> WriterOptions {
        WriterOptions::default()
    }

    /// Starts writing `path` with default options: fails with [`Error::OutputExists`] if it exists.
    ///
    /// `general.alignment` is always written (set to the alignment in use).
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &Metadata,
        tensors: Vec<TensorDesc>,
    ) -> Result<GgufWriter> {
        WriterOptions::default().create(path, metadata, tensors)
    }

    fn start(
        mut sink: Sink,
        metadata: &Metadata,
        tensors: Vec<TensorDesc>,
        alignment: Option<u32>,
    ) -> Result<GgufWriter> {
        let alignment = match alignment {
            Some(a) => a,
            None => match metadata.get("general.alignment") {
                None => DEFAULT_ALIGNMENT as u32,
                Some(Value::U32(a)) => *a,
                Some(v) => {
                    return Err(Error::WrongType {
                        key: "general.alignment".into(),
                        expected: "u32".into(),
                        found: v.type_description(),
                    })
                }
            },
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(Error::BadAlignment(alignment.into()));
        }
        let mut metadata = metadata.clone();
        metadata.insert("general.alignment", Value::U32(alignment));
        let alignment = u64::from(alignment);

        let mut names = HashSet::new();
        let mut placed = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for t in tensors {
            if t.name.len() > MAX_NAME_LEN {
                return Err(Error::NameTooLong {
                    len: t.name.len(),
                    name: t.name,
                });
            }
            if !names.insert(t.name.clone()) {
                return Err(Error::DuplicateTensor { name: t.name });
            }
            validate_shape(&TensorInfo {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ttype: TensorType::Known(t.ttype),
                offset: 0,
            })?;
            let n = t.n_bytes().ok_or_else(|| Error::DimOverflow {
                name: t.name.clone(),
            })?;
            placed.push((t, offset));
            offset = offset
                .checked_add(n)
                .and_then(|o| o.checked_next_multiple_of(alignment))
                .ok_or(Error::BadAlignment(alignment))?;
        }

        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(placed.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata.iter() {
            put_str(&mut head, k);
            head.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut head, k, v)?;
        }
        for (t, off) in &placed {
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ttype.id().to_le_bytes());
            head.extend_from_slice(&off.to_le_bytes());
        }
        let pad = pad_len(head.len() as u64, alignment);
        head.resize(head.len() + pad as usize, 0);
        sink_write(&mut sink, &head)?;
        Ok(GgufWriter {
            sink,
            tensors: placed,
            next: 0,
            alignment,
        })
    }

    /// Alignment in use.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Descriptors with their data offsets, in write order.
    pub fn tensors(&self) -> impl Iterator<Item = (&TensorDesc, u64)> {
        self.tensors.iter().map(|(t, o)| (t, *o))
    }

    /// Name of the tensor expected next, if any.
    pub fn next_tensor(&self) -> Option<&TensorDesc> {
        self.tensors.get(self.next).map(|(t, _)| t)
    }

    /// Writes the whole data of the next tensor, which must be `name` and have exactly its size.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut s = self.begin_tensor(name)?;
        s.write_bytes(bytes)?;
        s.finish()
    }

    /// Starts the next tensor, which must be `name`; feed it with [`TensorSink`].
    pub fn begin_tensor(&mut self, name: &str) -> Result<TensorSink<'_>> {
        let (desc, _) = self
            .tensors
            .get(self.next)
            .ok_or_else(|| Error::OutOfOrder {
                expected: "<none: all tensors written>".into(),
                got: name.to_string(),
            })?;
        if desc.name != name {
            return Err(Error::OutOfOrder {
                expected: desc.name.clone(),
                got: name.to_string(),
            });
        }
        let expected = desc.n_bytes().unwrap_or(0);
        Ok(TensorSink {
            w: self,
            expected,
            got: 0,
        })
    }

    fn check_done(&self) -> Result<()> {
        if let Some((t, _)) = self.tensors.get(self.next) {
            return Err(Error::TensorsNotWritten {
                missing: self.tensors.len() - self.next,
                first: t.name.clone(),
            });
        }
        Ok(())
    }

    /// Checks every tensor was written, fsyncs and atomically renames the temp file into place.
    pub fn finish(self) -> Result<PathBuf> {
        self.check_done()?;
        match self.sink {
            Sink::Vec(_) => Err(Error::Misuse(
                "finish() called on an in-memory writer; use finish_to_vec()".into(),
            )),
            Sink::File {
                out,
                dest,
                overwrite,
            } => {
                let tmp = out
                    .into_inner()
                    .map_err(|e| Error::io(&dest, e.into_error()))?;
                tmp.as_file().sync_all().map_err(|e| Error::io(&dest, e))?;
                let persisted = if overwrite {
                    tmp.persist(&dest)
                } else {
                    tmp.persist_noclobber(&dest)
                };
                persisted.map_err(|e| {
                    if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                        Error::OutputExists { path: dest.clone() }
                    } else {
                        Error::io(&dest, e.error)
                    }
                })?;
                if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    // Make the rename itself durable; not all platforms allow syncing a directory.
                    if let Ok(d) = std::fs::File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
                Ok(dest)
            }
        }
    }

    /// Checks every tensor was written and returns the file's bytes (in-memory writer only).
    pub fn finish_to_vec(self) -> Result<Vec<u8>> {
        self.check_done()?;
        match self.sink {
            Sink::Vec(v) => Ok(v),
            Sink::File { .. } => Err(Error::Misuse(
                "finish_to_vec() called on a file writer; use finish()".into(),
            )),
        }
    }
}

/// Receives one tensor's bytes in pieces; [`TensorSink::finish`] checks the total and pads.
pub struct TensorSink<'w> {
    w: &'w mut GgufWriter,
    expected: u64,
    got: u64,
}

impl TensorSink<'_> {
    fn name(&self) -> String {
        self.w
            .tensors
            .get(self.w.next)
            .map(|(t, _)| t.name.clone())
            .unwrap_or_default()
    }

    /// Appends bytes; more than the tensor's size is an error.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let got = self.got.saturating_add(bytes.len() as u64);
        if got > self.expected {
            return Err(Error::SizeMismatch {
                name: self.name(),
                expected: self.expected,
                got,
            });
        }
        sink_write(&mut self.w.sink, bytes)?;
        self.got = got;
        Ok(())
    }

    /// Completes the tensor: checks the byte count and writes padding to the next alignment.
    pub fn finish(self) -> Result<()> {
        if self.got != self.expected {
            return Err(Error::SizeMismatch {
                name: self.name(),
                expected: self.expected,
                got: self.got,
            });
        }
        // Pad every tensor to the alignment, the last one included, as llama.cpp and gguf-py do.
        let pad = pad_len(self.got, self.w.alignment);
        if pad > 0 {
            let zeros = vec![0u8; pad as usize];
            sink_write(&mut self.w.sink, &zeros)?;
        }
        self.w.next += 1;
        Ok(())
    }
}

impl Write for TensorSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_bytes(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sink_write(sink: &mut Sink, bytes: &[u8]) -> Result<()> {
    match sink {
        Sink::Vec(v) => {
            v.extend_from_slice(bytes);
            Ok(())
        }
        Sink::File { out, dest, .. } => out.write_all(bytes).map_err(|e| Error::io(&*dest, e)),
    }
}

fn pad_len(len: u64, alignment: u64) -> u64 {
    (alignment - len % alignment) % alignment
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of `v` (without its type id) to `buf`.
pub(crate) fn put_value(buf: &mut Vec<u8>, key: &str, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => put_str(buf, s),
        Value::Array(a) => put_array(buf, key, a, 0)?,
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}

fn put_array(buf: &mut Vec<u8>, key: &str, a: &Array, depth: usize) -> Result<()> {
    if depth >= crate::reader::MAX_ARRAY_DEPTH {
        return Err(Error::NestingTooDeep {
            key: key.to_string(),
            max: crate::reader::MAX_ARRAY_DEPTH,
        });
    }
    buf.extend_from_slice(&a.element_type().id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(buf, s)),
        Array::Array(v) => {
            for inner in v {
                put_array(buf, key, inner, depth + 1)?;
            }
        }
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
    Ok(())
}

/// Writes a complete GGUF into memory from descriptors and their data (tests, small files).
pub fn write_to_vec(
    metadata: &Metadata,
    tensors: &[(TensorDesc, &[u8])],
    alignment: Option<u32>,
) -> Result<Vec<u8>> {
    let mut opts = WriterOptions::default();
    if let Some(a) = alignment {
        opts = opts.alignment(a);
    }
    let mut w =
        opts.create_in_memory(metadata, tensors.iter().map(|(d, _)| d.clone()).collect())?;
    for (d, b) in tensors {
        w.write_tensor(&d.name, b)?;
    }
    w.finish_to_vec()
}
