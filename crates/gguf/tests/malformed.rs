//! Hand-built malformed GGUF files: each must fail with its specific error variant, never panic.

mod common;

use common::Bytes;
use shuku_gguf::{parse, Error, GgufFile, TensorType};

/// A valid file: 1 kv (u32), 2 F32 tensors of 8 elements, data section.
fn valid() -> Bytes {
    Bytes::header(2, 1)
        .kv_u32("a.b", 7)
        .tensor("t0", &[8], 0, 0)
        .tensor("t1", &[8], 0, 32)
        .align(32)
        .zeros(64)
}

fn err(b: &Bytes) -> Error {
    match parse(&b.0) {
        Ok(h) => panic!("parsed unexpectedly: {:?}", h.tensor_infos),
        Err(e) => {
            // Every error renders a message without panicking.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

macro_rules! expect {
    ($b:expr, $p:pat $(if $g:expr)?) => {{
        let e = err(&$b);
        assert!(matches!(e, $p $(if $g)?), "got {e:?}");
    }};
}

#[test]
fn the_reference_file_is_valid() {
    let h = parse(&valid().0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.tensor_infos.len(), 2);
    assert_eq!(h.data_offset % 32, 0);
}

#[test]
fn truncation_at_every_section() {
    let full = valid().0;
    let kv_start = 24usize;
    // (cut length, field name fragment)
    let cuts = [
        (0, "magic"),
        (2, "magic"),
        (6, "version"),
        (12, "tensor count"),
        (20, "metadata count"),
    ];
    for (n, what) in cuts {
        match parse(&full[..n]) {
            Err(Error::Truncated { what: w, .. }) => assert!(w.contains(what), "{n}: {w}"),
            other => panic!("cut {n}: {other:?}"),
        }
    }
    // After the counts, a short file trips the count check before anything else.
    for n in [24, 30] {
        assert!(
            matches!(parse(&full[..n]), Err(Error::CountTooLarge { .. })),
            "cut {n}"
        );
    }
    // Every other prefix fails with Truncated/CountTooLarge/TensorOutOfBounds and never panics.
    for n in 0..full.len() {
        let r = parse(&full[..n]);
        assert!(
            matches!(
                r,
                Err(Error::Truncated { .. })
                    | Err(Error::CountTooLarge { .. })
                    | Err(Error::TensorOutOfBounds { .. })
            ),
            "cut {n}: {r:?}"
        );
    }
    let _ = kv_start;
}

/// A first key/value big enough that the up-front count checks pass, so truncation is
/// detected at the field itself.
fn padded(n_tensors: u64, n_kv: u64) -> Bytes {
    Bytes::header(n_tensors, n_kv)
        .str("pad")
        .u32(8)
        .str(&"p".repeat(100))
}
const PAD_END: usize = 24 + 8 + 3 + 4 + 8 + 100;

fn truncated_what(b: &Bytes, cut: usize) -> String {
    match parse(&b.0[..cut]) {
        Err(Error::Truncated { what, .. }) | Err(Error::CountTooLarge { what, .. }) => what,
        other => panic!("cut {cut}: {other:?}"),
    }
}

#[test]
fn truncated_fields_name_the_field() {
    // Second kv: key "key.x", type u64, value.
    let kv = padded(0, 2).str("key.x").u32(10).u64(5);
    let k = PAD_END;
    for (cut, frag) in [
        (k + 4, "metadata key #1 length"),
        (k + 8 + 2, "metadata key #1"),
        (k + 8 + 5 + 2, "value type of `key.x`"),
        (k + 8 + 5 + 4 + 6, "value of `key.x`"),
    ] {
        let w = truncated_what(&kv, cut);
        assert!(w.contains(frag), "{cut}: {w}");
    }
    // Array: cut in element type, in length, in elements.
    let arr = padded(0, 2)
        .str("arr")
        .u32(9)
        .u32(4)
        .u64(3)
        .u32(1)
        .u32(2)
        .u32(3);
    let a = PAD_END + 8 + 3 + 4;
    for (cut, frag) in [
        (a + 2, "array element type of `arr`"),
        (a + 4 + 3, "array length of `arr`"),
        (a + 12 + 5, "array length of `arr`"),
    ] {
        let w = truncated_what(&arr, cut);
        assert!(w.contains(frag), "{cut}: {w}");
    }
    // String value whose length exceeds the file.
    let s = Bytes::header(0, 1).str("s").u32(8).u64(1000).raw(b"abc");
    expect!(s, Error::CountTooLarge { ref what, count: 1000, .. } if what.contains("value of `s`"));
}

#[test]
fn truncated_tensor_infos() {
    let t = padded(1, 1).tensor("w", &[32, 2], 0, 0);
    let base = PAD_END;
    for (cut, frag) in [
        (base + 3, "tensor #0 name length"),
        (base + 8, "tensor #0 name"),
        (base + 8 + 1 + 2, "n_dims of tensor `w`"),
        (base + 8 + 1 + 4 + 3, "dim 0 of tensor `w`"),
        (base + 8 + 1 + 4 + 8 + 3, "dim 1 of tensor `w`"),
        (base + 8 + 1 + 4 + 16 + 2, "type of tensor `w`"),
        (base + 8 + 1 + 4 + 16 + 4 + 4, "offset of tensor `w`"),
    ] {
        let w = truncated_what(&t, cut);
        assert!(w.contains(frag), "{cut}: {w}");
    }
    // Tensor data cut short.
    let mut v = valid();
    v.0.truncate(v.len() - 1);
    expect!(v, Error::TensorOutOfBounds { ref name, .. } if name == "t1");
}

#[test]
fn bad_magic_versions_and_endianness() {
    expect!(Bytes::new().raw(b"GGML").u32(3).u64(0).u64(0), Error::BadMagic { found } if &found == b"GGML");
    expect!(
        Bytes::new().raw(b"GGUF").u32(1).u64(0).u64(0),
        Error::UnsupportedVersion(1)
    );
    assert!(err(&Bytes::new().raw(b"GGUF").u32(1).u64(0).u64(0))
        .to_string()
        .contains("v1"));
    expect!(
        Bytes::new().raw(b"GGUF").u32(4).u64(0).u64(0),
        Error::UnsupportedVersion(4)
    );
    expect!(
        Bytes::new()
            .raw(b"GGUF")
            .raw(&3u32.to_be_bytes())
            .u64(0)
            .u64(0),
        Error::BigEndian { version: 3 }
    );
    // v2 is accepted.
    assert!(parse(&Bytes::new().raw(b"GGUF").u32(2).u64(0).u64(0).0).is_ok());
}

#[test]
fn counts_and_lengths_beyond_the_input() {
    expect!(Bytes::header(u64::MAX, 0), Error::CountTooLarge { ref what, .. } if what == "tensor count");
    expect!(Bytes::header(0, 1 << 40), Error::CountTooLarge { ref what, .. } if what == "metadata count");
    expect!(
        Bytes::header(0, 1).u64(u64::MAX).raw(b"k").u32(4).u32(0),
        Error::CountTooLarge { .. }
    );
    // Array length that would need more bytes than remain.
    expect!(
        Bytes::header(0, 1).str("a").u32(9).u32(12).u64(1 << 60).zeros(16),
        Error::CountTooLarge { ref what, count, .. } if what.contains("`a`") && count == 1 << 60
    );
    // Array of strings: each string needs 8 bytes at least.
    expect!(
        Bytes::header(0, 1).str("a").u32(9).u32(8).u64(10).zeros(40),
        Error::CountTooLarge { .. }
    );
}

#[test]
fn nested_array_bomb_is_bounded() {
    // 64 levels of array-of-arrays each claiming one element.
    let mut b = Bytes::header(0, 1).str("bomb").u32(9);
    for _ in 0..64 {
        b = b.u32(9).u64(1);
    }
    b = b.u32(4).u64(0);
    expect!(b, Error::NestingTooDeep { ref key, .. } if key == "bomb");
    // Nested arrays within the limit parse.
    let ok = Bytes::header(0, 1)
        .str("n")
        .u32(9)
        .u32(9)
        .u64(2)
        .u32(4)
        .u64(1)
        .u32(7)
        .u32(8)
        .u64(0);
    let h = parse(&ok.0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        h.metadata
            .get("n")
            .and_then(|v| v.as_array())
            .map(|a| a.len()),
        Some(2)
    );
}

#[test]
fn bad_values_and_keys() {
    expect!(Bytes::header(0, 1).str("k").u32(13).u32(0), Error::UnknownValueType { ref key, type_id: 13 } if key == "k");
    expect!(
        Bytes::header(0, 1).str("k").u32(9).u32(77).u64(0),
        Error::UnknownValueType { type_id: 77, .. }
    );
    expect!(Bytes::header(0, 1).u64(2).raw(&[0xff, 0xfe]).u32(4).u32(0), Error::InvalidUtf8 { ref what } if what.contains("key"));
    expect!(
        Bytes::header(0, 1)
            .str("k")
            .u32(8)
            .u64(1)
            .raw(&[0xc3])
            .zeros(8),
        Error::InvalidUtf8 { .. }
    );
    expect!(
        Bytes::header(0, 1).str("k").u32(7).u8(2).zeros(4),
        Error::InvalidBool { byte: 2, .. }
    );
    expect!(Bytes::header(0, 2).kv_u32("dup", 1).kv_u32("dup", 2), Error::DuplicateKey { ref key } if key == "dup");
}

#[test]
fn alignment_rules() {
    let with_align = |v: Bytes| Bytes::header(0, 1).str("general.alignment").raw(&v.0);
    expect!(
        with_align(Bytes::new().u32(4).u32(0)),
        Error::BadAlignment(0)
    );
    expect!(
        with_align(Bytes::new().u32(4).u32(48)),
        Error::BadAlignment(48)
    );
    expect!(with_align(Bytes::new().u32(10).u64(32)), Error::WrongType { ref key, .. } if key == "general.alignment");
    expect!(
        with_align(Bytes::new().u32(8).str("32")),
        Error::WrongType { .. }
    );
    // A valid non-default alignment moves the data section.
    let b = Bytes::header(1, 1)
        .kv_u32("general.alignment", 64)
        .tensor("t", &[4], 0, 0)
        .align(64)
        .zeros(16);
    let h = parse(&b.0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((h.alignment, h.data_offset % 64), (64, 0));
    // Offset aligned to 32 but not to 64.
    let m = Bytes::header(2, 1)
        .kv_u32("general.alignment", 64)
        .tensor("a", &[4], 0, 0)
        .tensor("b", &[4], 0, 32)
        .align(64)
        .zeros(128);
    expect!(m, Error::Misaligned { ref name, offset: 32, alignment: 64 } if name == "b");
}

#[test]
fn bad_tensor_infos() {
    let one = |name: &str, dims: &[u64], ty: u32, off: u64| {
        Bytes::header(1, 0)
            .tensor(name, dims, ty, off)
            .align(32)
            .zeros(256)
    };
    expect!(
        one(&"x".repeat(64), &[4], 0, 0),
        Error::NameTooLong { len: 64, .. }
    );
    assert!(parse(&one(&"x".repeat(63), &[4], 0, 0).0).is_ok());
    expect!(one("t", &[], 0, 0), Error::NoDims { ref name } if name == "t");
    expect!(
        one("t", &[1, 1, 1, 1, 1], 0, 0),
        Error::TooManyDims { n_dims: 5, .. }
    );
    expect!(one("t", &[4, 0], 0, 0), Error::ZeroDim { axis: 1, .. });
    expect!(
        one("t", &[1 << 32, 1 << 32], 0, 0),
        Error::DimOverflow { .. }
    );
    expect!(one("t", &[1 << 62, 2], 0, 0), Error::DimOverflow { .. });
    expect!(
        one("t", &[16], 2, 0),
        Error::RowNotBlockAligned {
            ne0: 16,
            block_size: 32,
            ..
        }
    );
    expect!(one("t", &[4], 0, 3), Error::Misaligned { offset: 3, .. });
    expect!(one("t", &[4], 0, 1 << 20), Error::TensorOutOfBounds { .. });
    expect!(
        one("t", &[4], 0, u64::MAX - 31),
        Error::TensorOutOfBounds { .. }
    );
    expect!(
        Bytes::header(2, 0).tensor("t", &[4], 0, 0).tensor("t", &[4], 0, 32).align(32).zeros(64),
        Error::DuplicateTensor { ref name } if name == "t"
    );
    expect!(
        Bytes::header(2, 0).tensor("a", &[16], 0, 0).tensor("b", &[4], 0, 32).align(32).zeros(128),
        Error::TensorsOverlap { ref a, ref b } if a == "a" && b == "b"
    );
    expect!(
        Bytes::header(1, 0)
            .tensor("t", &[4], 0, 0)
            .u8(0xff)
            .u8(0xff),
        Error::TensorOutOfBounds { .. }
    );
    // Invalid UTF-8 tensor name.
    expect!(
        Bytes::header(1, 0).u64(1).u8(0xff).u32(1).u64(4).u32(0).u64(0).align(32).zeros(16),
        Error::InvalidUtf8 { ref what } if what.contains("tensor #0")
    );
}

#[test]
fn unknown_tensor_type_is_tolerated() {
    let b = Bytes::header(2, 1)
        .str("general.architecture")
        .u32(8)
        .str("llama")
        .tensor("odd", &[4], 99, 0)
        .tensor("ok", &[4], 0, 32)
        .align(32)
        .zeros(32)
        .raw(&[0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64]);
    let f = GgufFile::from_bytes(b.0, "mem.gguf").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.get_str("general.architecture").ok(), Some("llama"));
    let odd = f.tensor_info("odd").unwrap();
    assert_eq!(odd.ttype, TensorType::Unknown(99));
    assert_eq!(odd.n_bytes(), None);
    let v = f
        .tensor("ok")
        .and_then(|v| v.to_tensor(&candle_core::Device::Cpu))
        .unwrap();
    assert_eq!(v.to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    let e = f
        .tensor("odd")
        .and_then(|v| v.to_tensor(&candle_core::Device::Cpu));
    assert!(matches!(e, Err(Error::UnknownTensorType { ref name, type_id: 99 }) if name == "odd"));
    assert!(matches!(
        f.tensor("nope"),
        Err(Error::TensorNotFound { .. })
    ));
    // An unknown-type tensor starting inside another tensor is still an overlap.
    let b = Bytes::header(2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("odd", &[4], 99, 32)
        .align(32)
        .zeros(64);
    expect!(b, Error::TensorsOverlap { .. });
}

#[test]
fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, b"GGUF\x01\0\0\0").unwrap();
    let e = GgufFile::open(&p).unwrap_err();
    assert!(e.to_string().contains("bad.gguf"), "{e}");
    assert!(matches!(e.root(), Error::UnsupportedVersion(1)));
    let e = GgufFile::open(dir.path().join("missing.gguf")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("missing.gguf"));
}

#[test]
fn random_garbage_never_panics() {
    // Deterministic random mutations of the valid file.
    let base = valid().0;
    let mut rng = shuku_testkit::TestRng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20000 {
        let s = rng.next_u64();
        let mut b = base.clone();
        let n = (s % 4 + 1) as usize;
        for k in 0..n {
            let i = ((s >> (8 * k)) as usize) % b.len();
            b[i] = (s >> (3 * k + 5)) as u8;
        }
        let cut = (s >> 40) as usize % (b.len() + 1);
        let _ = parse(&b);
        let _ = parse(&b[..cut]);
    }
}
