//! GGUF reader: a pure, panic-free header parser over `&[u8]` and a memory-mapped file on top.
//!
//! The parser never trusts a count: before allocating for `n` items it checks that the remaining
//! input could hold `n` items of the smallest encoding, so hostile headers cannot make it allocate
//! more than a small multiple of the input size. Every tensor is validated against the whole input
//! (alignment, shape, byte range, overlaps), so a [`TensorView`] can slice without further checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::types::{GgmlType, TensorType};
use crate::value::{Array, Value, ValueType};

/// `GGUF` as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest tensor name llama.cpp accepts (`GGML_MAX_NAME` is 64 including the NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: u32 = 4;
/// Deepest array nesting accepted (llama.cpp itself does not nest at all).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne\[0\]) is the innermost, contiguous one.
    pub dims: Vec<u64>,
    /// Element type.
    pub ttype: TensorType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Row-major shape as candle wants it (dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (saturating; validated tensors never saturate).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Size of the data in bytes; `None` for an unknown type.
    pub fn n_bytes(&self) -> Option<u64> {
        self.ttype.known()?.bytes_for(self.n_elements())
    }

    /// Bits per weight of the tensor's type; `None` for an unknown type.
    pub fn bits_per_weight(&self) -> Option<f64> {
        Some(self.ttype.known()?.bits_per_weight())
    }
}

/// Everything before the tensor data, parsed and validated.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor descriptions in file order.
    pub tensor_infos: Vec<TensorInfo>,
    /// Data alignment (`general.alignment` or 32).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// Bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let have = self.remaining();
        if n > have {
            return Err(Error::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                have,
            });
        }
        // n <= remaining, so it fits in usize and the range is in bounds.
        let end = self.pos + n as usize;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| Error::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                have,
            })?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in what is left.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<usize> {
        let remaining = self.remaining();
        match count.checked_mul(min_size) {
            Some(need) if need <= remaining => {
                usize::try_from(count).map_err(|_| Error::CountTooLarge {
                    what: what(),
                    count,
                    remaining,
                })
            }
            _ => Err(Error::CountTooLarge {
                what: what(),
                count,
                remaining,
            }),
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("{} length", what()))?;
        let n = self.check_count(len, 1, what)?;
        let bytes = self.take(n as u64, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidUtf8 { what: what() })
    }
}

/// Parses and validates a whole GGUF file held in memory.
///
/// `bytes` must be the complete file: tensor byte ranges are checked against its length.
/// Never panics; every malformed input yields a specific [`Error`] variant.
pub fn parse(bytes: &[u8]) -> Result<GgufHeader> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(Error::BadMagic { found: magic });
    }
    let version = c.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 || v.swap_bytes() == 1 => {
            return Err(Error::BigEndian {
                version: v.swap_bytes(),
            })
        }
        v => return Err(Error::UnsupportedVersion(v)),
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    // Smallest encodings: kv = key length + value type + 1-byte value; tensor info = name length
    // + n_dims + one dim + type + offset.
    let n_kv = c.check_count(n_kv, 8 + 4 + 1, &|| "metadata count".into())?;
    let n_tensors = c.check_count(n_tensors, 8 + 4 + 8 + 4 + 8, &|| "tensor count".into())?;

    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let type_id = c.u32(&|| format!("value type of `{key}`"))?;
        let vt = ValueType::from_id(type_id).ok_or_else(|| Error::UnknownValueType {
            key: key.clone(),
            type_id,
        })?;
        let value = read_value(&mut c, &key, vt, 0)?;
        metadata.push_new(key, value)?;
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(v) => {
            return Err(Error::WrongType {
                key: "general.alignment".into(),
                expected: "u32".into(),
                found: v.type_description(),
            })
        }
    };
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(Error::BadAlignment(alignment));
    }

    let mut tensor_infos = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for i in 0..n_tensors {
        let name = c.string(&|| format!("tensor #{i} name"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                len: name.len(),
                name,
            });
        }
        if seen.insert(name.clone(), ()).is_some() {
            return Err(Error::DuplicateTensor { name });
        }
        let n_dims = c.u32(&|| format!("n_dims of tensor `{name}`"))?;
        if n_dims == 0 {
            return Err(Error::NoDims { name });
        }
        if n_dims > MAX_DIMS {
            return Err(Error::TooManyDims { name, n_dims });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for axis in 0..n_dims as usize {
            dims.push(c.u64(&|| format!("dim {axis} of tensor `{name}`"))?);
        }
        let type_id = c.u32(&|| format!("type of tensor `{name}`"))?;
        let offset = c.u64(&|| format!("offset of tensor `{name}`"))?;
        let info = TensorInfo {
            name,
            dims,
            ttype: TensorType::from_id(type_id),
            offset,
        };
        validate_shape(&info)?;
        if offset % alignment != 0 {
            return Err(Error::Misaligned {
                name: info.name,
                offset,
                alignment,
            });
        }
        tensor_infos.push(info);
    }

    let end_of_infos = c.pos as u64;
    let data_offset = end_of_infos
        .checked_next_multiple_of(alignment)
        .ok_or(Error::BadAlignment(alignment))?;
    validate_ranges(&tensor_infos, data_offset, bytes.len() as u64)?;

    Ok(GgufHeader {
        version,
        metadata,
        tensor_infos,
        alignment,
        data_offset,
    })
}

fn read_value(c: &mut Cursor<'_>, key: &str, vt: ValueType, depth: usize) -> Result<Value> {
    let w = || format!("value of `{key}`");
    Ok(match vt {
        ValueType::U8 => Value::U8(u8::from_le_bytes(c.array(&w)?)),
        ValueType::I8 => Value::I8(i8::from_le_bytes(c.array(&w)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array(&w)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array(&w)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(c.array(&w)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array(&w)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array(&w)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(c.array(&w)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array(&w)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array(&w)?)),
        ValueType::Bool => Value::Bool(read_bool(c, key)?),
        ValueType::String => Value::String(c.string(&w)?),
        ValueType::Array => Value::Array(read_array(c, key, depth)?),
    })
}

fn read_bool(c: &mut Cursor<'_>, key: &str) -> Result<bool> {
    let [b] = c.array::<1>(&|| format!("value of `{key}`"))?;
    match b {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(Error::InvalidBool {
            key: key.to_string(),
            byte,
        }),
    }
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(Error::NestingTooDeep {
            key: key.to_string(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let type_id = c.u32(&|| format!("array element type of `{key}`"))?;
    let et = ValueType::from_id(type_id).ok_or_else(|| Error::UnknownValueType {
        key: key.to_string(),
        type_id,
    })?;
    let len = c.u64(&|| format!("array length of `{key}`"))?;
    let n = c.check_count(len, et.min_encoded_size(), &|| {
        format!("array length of `{key}`")
    })?;
    let w = || format!("array element of `{key}`");
    macro_rules! fixed {
        ($t:ty, $var:ident) => {{
            const S: usize = std::mem::size_of::<$t>();
            let raw = c.take((n * S) as u64, &w)?;
            Array::$var(
                raw.chunks_exact(S)
                    .map(|ch| {
                        let mut a = [0u8; S];
                        a.copy_from_slice(ch);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        }};
    }
    Ok(match et {
        ValueType::U8 => Array::U8(c.take(n as u64, &w)?.to_vec()),
        ValueType::I8 => fixed!(i8, I8),
        ValueType::U16 => fixed!(u16, U16),
        ValueType::I16 => fixed!(i16, I16),
        ValueType::U32 => fixed!(u32, U32),
        ValueType::I32 => fixed!(i32, I32),
        ValueType::F32 => fixed!(f32, F32),
        ValueType::U64 => fixed!(u64, U64),
        ValueType::I64 => fixed!(i64, I64),
        ValueType::F64 => fixed!(f64, F64),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_bool(c, key)?);
            }
            Array::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(c.string(&w)?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            // Grown as read, not pre-sized: each nested array is much larger than its encoding.
            let mut v = Vec::new();
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

/// Shape checks shared by the reader and the writer.
pub(crate) fn validate_shape(info: &TensorInfo) -> Result<()> {
    let name = &info.name;
    if info.dims.is_empty() {
        return Err(Error::NoDims { name: name.clone() });
    }
    if info.dims.len() > MAX_DIMS as usize {
        return Err(Error::TooManyDims {
            name: name.clone(),
            n_dims: info.dims.len() as u32,
        });
    }
    let mut n: u64 = 1;
    for (axis, &d) in info.dims.iter().enumerate() {
        if d == 0 {
            return Err(Error::ZeroDim {
                name: name.clone(),
                axis,
            });
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| Error::DimOverflow { name: name.clone() })?;
    }
    if let TensorType::Known(t) = info.ttype {
        let ne0 = info.dims.first().copied().unwrap_or(1);
        if ne0 % t.block_size() != 0 {
            return Err(Error::RowNotBlockAligned {
                name: name.clone(),
                ne0,
                ttype: t.name().to_string(),
                block_size: t.block_size(),
            });
        }
        t.bytes_for(n)
            .filter(|&b| b <= i64::MAX as u64)
            .ok_or_else(|| Error::DimOverflow { name: name.clone() })?;
    }
    Ok(())
}

fn validate_ranges(infos: &[TensorInfo], data_offset: u64, file_size: u64) -> Result<()> {
    // (start, end, index) of each tensor; an unknown type occupies at least its start byte.
    let mut ranges = Vec::with_capacity(infos.len());
    for (i, t) in infos.iter().enumerate() {
        let len = t.n_bytes().unwrap_or(0);
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_size && s <= file_size => ranges.push((s, e, i)),
            _ => {
                return Err(Error::TensorOutOfBounds {
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_size,
                })
            }
        }
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if let [(_, a_end, a), (b_start, _, b)] = *w {
            let a_info = infos.get(a);
            let b_info = infos.get(b);
            // Sorted by start, any overlap shows up between neighbours. Zero-length ranges
            // (unknown types) only collide when they start strictly inside another tensor.
            if b_start < a_end {
                return Err(Error::TensorsOverlap {
                    a: a_info.map(|t| t.name.clone()).unwrap_or_default(),
                    b: b_info.map(|t| t.name.clone()).unwrap_or_default(),
                });
            }
        }
    }
    Ok(())
}

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An open, validated GGUF file whose tensor data stays memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    backing: Backing,
    header: GgufHeader,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("n_kv", &self.header.metadata.len())
            .field("n_tensors", &self.header.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and validates `path`. Errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only and private to this value. The one hazard is another process
        // truncating or rewriting the file while it is mapped (SIGBUS or changed bytes); GGUF model
        // files are not modified in place (our writer replaces files by atomic rename), and memmap2
        // offers no safe alternative for zero-copy access.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        Self::from_backing(path, Backing::Mmap(mmap))
    }

    /// Lets the pages holding tensor `name`'s bytes leave memory: a tool that streams through a
    /// large file tensor by tensor (quantization, conversion) then holds about one tensor of it
    /// resident instead of every page it has read, as llama-quantize does by unmapping each weight.
    /// The bytes stay readable (the kernel reads them from the file again if asked). A no-op for
    /// files read into memory and for unknown names.
    pub fn release(&self, name: &str) {
        let (Backing::Mmap(m), Some(info)) = (&self.backing, self.tensor_info(name)) else {
            return;
        };
        let Some(len) = info.n_bytes() else {
            return;
        };
        let start = self.header.data_offset.saturating_add(info.offset);
        let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else {
            return;
        };
        if start.checked_add(len).is_none_or(|end| end > m.len()) || len == 0 {
            return;
        }
        // SAFETY: the mapping is a read-only file mapping; MADV_DONTNEED drops its resident pages
        // and a later access faults them in again from the unchanged file, so every slice borrowed
        // from `self` keeps its contents. Only the advice can fail (then memory is merely kept).
        let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
    }

    /// Parses a file already in memory (`path` is only used in messages).
    pub fn from_bytes(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<GgufFile> {
        Self::from_backing(path.into(), Backing::Owned(bytes))
    }

    fn from_backing(path: PathBuf, backing: Backing) -> Result<GgufFile> {
        let header = parse(backing.bytes()).map_err(|e| e.in_file(&path))?;
        let by_name = header
            .tensor_infos
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path,
            backing,
            header,
            by_name,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }
    /// The parsed header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }
    /// Metadata in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }
    /// Data alignment.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }
    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }
    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.backing.bytes().len() as u64
    }
    /// The raw bytes of the whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }
    /// Tensor descriptions in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.header.tensor_infos
    }
    /// Description of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name
            .get(name)
            .and_then(|&i| self.header.tensor_infos.get(i))
    }

    /// Metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata().get(key)
    }
    /// See [`Metadata::get_u32`].
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.metadata().get_u32(key)
    }
    /// See [`Metadata::get_u64`].
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.metadata().get_u64(key)
    }
    /// See [`Metadata::get_f32`].
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.metadata().get_f32(key)
    }
    /// See [`Metadata::get_str`].
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.metadata().get_str(key)
    }
    /// See [`Metadata::get_bool`].
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.metadata().get_bool(key)
    }
    /// See [`Metadata::get_array`].
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        self.metadata().get_array(key)
    }
    /// See [`Metadata::opt_u32`].
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.metadata().opt_u32(key)
    }
    /// See [`Metadata::opt_f32`].
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.metadata().opt_f32(key)
    }
    /// See [`Metadata::opt_str`].
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.metadata().opt_str(key)
    }

    /// Zero-copy view of tensor `name`'s bytes.
    ///
    /// For a tensor of unknown type the view holds no bytes (its size is unknown).
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| Error::TensorNotFound {
                name: name.to_string(),
            })?;
        self.view(info)
    }

    /// Views of every tensor, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = Result<TensorView<'_>>> {
        self.header.tensor_infos.iter().map(|i| self.view(i))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> Result<TensorView<'a>> {
        view_in(self.backing.bytes(), self.header.data_offset, info)
    }
}

/// The bytes of `info` inside a whole file `bytes` whose data section starts at `data_offset`.
pub fn view_in<'a>(
    bytes: &'a [u8],
    data_offset: u64,
    info: &'a TensorInfo,
) -> Result<TensorView<'a>> {
    let len = info.n_bytes().unwrap_or(0);
    let oob = || Error::TensorOutOfBounds {
        name: info.name.clone(),
        start: data_offset.saturating_add(info.offset),
        end: data_offset.saturating_add(info.offset).saturating_add(len),
        file_size: bytes.len() as u64,
    };
    let start = data_offset.checked_add(info.offset).ok_or_else(oob)?;
    let end = start.checked_add(len).ok_or_else(oob)?;
    let start = usize::try_from(start).map_err(|_| oob())?;
    let end = usize::try_from(end).map_err(|_| oob())?;
    let bytes = bytes.get(start..end).ok_or_else(oob)?;
    Ok(TensorView { info, bytes })
}

/// A tensor's description and its bytes, borrowed from the file.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// The description.
    pub info: &'a TensorInfo,
    /// The raw data (empty for an unknown type).
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    fn known_type(&self) -> Result<GgmlType> {
        match self.info.ttype {
            TensorType::Known(t) => Ok(t),
            TensorType::Unknown(type_id) => Err(Error::UnknownTensorType {
                name: self.info.name.clone(),
                type_id,
            }),
        }
    }

    /// The tensor as a candle `QTensor` (a copy of the bytes in candle's block layout).
    pub fn to_qtensor(&self, device: &Device) -> Result<QTensor> {
        let t = self.known_type()?;
        let dt = t.to_candle().ok_or_else(|| Error::UnsupportedByCandle {
            name: self.info.name.clone(),
            ttype: t.name().to_string(),
        })?;
        Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
            dt,
            self.bytes,
            self.info.shape(),
            device,
        )?)
    }

    /// The tensor as a candle `Tensor`: F32/F16/BF16/F64 keep their dtype, quantized types are
    /// dequantized to f32.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let t = self.known_type()?;
        if let Some(dt) = t.to_candle_dtype() {
            return Ok(Tensor::from_raw_buffer(
                self.bytes,
                dt,
                &self.info.shape(),
                device,
            )?);
        }
        Ok(self.to_qtensor(device)?.dequantize(device)?)
    }
}
