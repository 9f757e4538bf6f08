//! Writer: round trips, atomicity, overwrite protection, alignment, and gguf-py reading our output.

mod common;

use common::*;
use shuku_gguf::value::Array;
use shuku_gguf::writer::write_to_vec;
use shuku_gguf::{parse, Error, GgmlType, GgufFile, GgufWriter, Metadata, TensorDesc, Value};

fn sample_metadata() -> Metadata {
    let mut m = Metadata::new();
    m.insert("general.architecture", "llama");
    m.insert("u8", Value::U8(1));
    m.insert("i8", Value::I8(-2));
    m.insert("u16", Value::U16(3));
    m.insert("i16", Value::I16(-4));
    m.insert("u32", Value::U32(5));
    m.insert("i32", Value::I32(-6));
    m.insert("f32", Value::F32(0.5));
    m.insert("bool", Value::Bool(true));
    m.insert("str", "héllo");
    m.insert("u64", Value::U64(u64::MAX));
    m.insert("i64", Value::I64(i64::MIN));
    m.insert("f64", Value::F64(-1.25));
    m.insert(
        "arr.str",
        vec!["a".to_string(), String::new(), "ü".to_string()],
    );
    m.insert("arr.f32", vec![1.0f32, 2.0]);
    m.insert(
        "arr.empty",
        Value::Array(Array::empty(shuku_gguf::ValueType::U64)),
    );
    m.insert(
        "arr.nested",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::String(vec!["x".into()]),
            Array::Bool(vec![]),
        ])),
    );
    m
}

fn sample_tensors() -> Vec<(TensorDesc, Vec<u8>)> {
    vec![
        (
            TensorDesc::new("a", vec![3], GgmlType::F32),
            (0..12).collect(),
        ),
        (
            TensorDesc::new("b", vec![32, 2], GgmlType::Q8_0),
            (0..68).map(|i| i as u8).collect(),
        ),
        (
            TensorDesc::from_shape("c", &[2, 5], GgmlType::F16),
            vec![7; 20],
        ),
    ]
}

#[test]
fn round_trip_in_memory() {
    let m = sample_metadata();
    let ts = sample_tensors();
    let refs: Vec<(TensorDesc, &[u8])> =
        ts.iter().map(|(d, b)| (d.clone(), b.as_slice())).collect();
    let bytes = write_to_vec(&m, &refs, None).unwrap_or_else(|e| panic!("{e}"));
    let h = parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.version, 3);
    let mut expected = m.clone();
    expected.insert("general.alignment", Value::U32(32));
    assert_eq!(h.metadata, expected);
    let f = GgufFile::from_bytes(bytes, "mem").unwrap();
    for (d, b) in &ts {
        let v = f.tensor(&d.name).unwrap();
        assert_eq!(v.info.dims, d.dims);
        assert_eq!(v.bytes, b.as_slice());
        assert_eq!(v.info.offset % 32, 0);
    }
    assert_eq!(f.tensor_info("c").unwrap().shape(), vec![2, 5]);
}

#[test]
fn alignment_is_honoured() {
    let ts = sample_tensors();
    let refs: Vec<(TensorDesc, &[u8])> =
        ts.iter().map(|(d, b)| (d.clone(), b.as_slice())).collect();
    let bytes = write_to_vec(&sample_metadata(), &refs, Some(256)).unwrap();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.alignment, 256);
    assert_eq!(h.data_offset % 256, 0);
    assert!(h.tensor_infos.iter().all(|t| t.offset % 256 == 0));
    assert_eq!(h.metadata.get("general.alignment"), Some(&Value::U32(256)));
    assert!(matches!(
        write_to_vec(&sample_metadata(), &refs, Some(48)),
        Err(Error::BadAlignment(48))
    ));
}

#[test]
fn writer_checks_order_and_sizes() {
    let ts = sample_tensors();
    let descs: Vec<TensorDesc> = ts.iter().map(|(d, _)| d.clone()).collect();
    let mut w = GgufWriter::options()
        .create_in_memory(&sample_metadata(), descs.clone())
        .unwrap();
    assert!(matches!(
        w.write_tensor("b", &ts[1].1),
        Err(Error::OutOfOrder { .. })
    ));
    assert!(matches!(
        w.write_tensor("a", &[0; 11]),
        Err(Error::SizeMismatch {
            expected: 12,
            got: 11,
            ..
        })
    ));
    // Streaming in pieces through the Write impl.
    let mut s = w.begin_tensor("a").unwrap();
    std::io::Write::write_all(&mut s, &ts[0].1[..5]).unwrap();
    std::io::Write::write_all(&mut s, &ts[0].1[5..]).unwrap();
    s.finish().unwrap();
    assert!(matches!(
        w.finish_to_vec(),
        Err(Error::TensorsNotWritten { missing: 2, .. })
    ));
    // Invalid descriptors are rejected up front.
    let bad = |d: TensorDesc| {
        GgufWriter::options()
            .create_in_memory(&Metadata::new(), vec![d])
            .err()
    };
    assert!(matches!(
        bad(TensorDesc::new("q", vec![16], GgmlType::Q4_0)),
        Some(Error::RowNotBlockAligned { .. })
    ));
    assert!(matches!(
        bad(TensorDesc::new("x".repeat(64), vec![1], GgmlType::F32)),
        Some(Error::NameTooLong { .. })
    ));
    assert!(matches!(
        bad(TensorDesc::new("z", vec![0], GgmlType::F32)),
        Some(Error::ZeroDim { .. })
    ));
}

#[test]
fn file_writer_is_atomic_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let ts = sample_tensors();
    let descs: Vec<TensorDesc> = ts.iter().map(|(d, _)| d.clone()).collect();
    let listing = || std::fs::read_dir(dir.path()).unwrap().count();

    // Dropped half-way: nothing left behind.
    {
        let mut w = GgufWriter::create(&out, &sample_metadata(), descs.clone()).unwrap();
        w.write_tensor("a", &ts[0].1).unwrap();
        assert_eq!(listing(), 1, "temp file exists while writing");
    }
    assert_eq!(listing(), 0);
    assert!(!out.exists());

    // An error mid-way, then drop: still nothing.
    {
        let mut w = GgufWriter::create(&out, &sample_metadata(), descs.clone()).unwrap();
        assert!(w.write_tensor("a", &[1, 2, 3]).is_err());
    }
    assert_eq!(listing(), 0);

    // Full write.
    let mut w = GgufWriter::create(&out, &sample_metadata(), descs.clone()).unwrap();
    for (d, b) in &ts {
        w.write_tensor(&d.name, b).unwrap();
    }
    assert_eq!(w.finish().unwrap(), out);
    assert_eq!(listing(), 1);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor("b").unwrap().bytes, ts[1].1.as_slice());

    // Refuses to overwrite; allowed with the option.
    let e = GgufWriter::create(&out, &sample_metadata(), descs.clone()).unwrap_err();
    assert!(matches!(e, Error::OutputExists { .. }), "{e:?}");
    let w = GgufWriter::options()
        .overwrite(true)
        .create(&out, &Metadata::new(), vec![])
        .unwrap();
    assert!(w.next_tensor().is_none());
    w.finish().unwrap();
    assert_eq!(GgufFile::open(&out).unwrap().tensor_infos().len(), 0);
    assert_eq!(listing(), 1);
}

/// The finished file has the permissions of any file the user creates (not a temp file's 0600).
#[cfg(unix)]
#[test]
fn written_file_has_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    GgufWriter::create(&out, &sample_metadata(), vec![])
        .unwrap()
        .finish()
        .unwrap();
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), mode(&plain));
}

#[test]
fn gguf_py_reads_our_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ours.gguf");
    let ts = sample_tensors();
    let mut w = GgufWriter::options()
        .alignment(64)
        .create(
            &out,
            &sample_metadata(),
            ts.iter().map(|(d, _)| d.clone()).collect(),
        )
        .unwrap();
    for (d, b) in &ts {
        w.write_tensor(&d.name, b).unwrap();
    }
    w.finish().unwrap();
    let dump: serde_json::Value = serde_json::from_str(&run_python(GGUF_PY_DUMP, &[&out])).unwrap();
    let keys: Vec<&str> = dump["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k[0].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = sample_metadata().keys().map(String::from).collect();
    expected.push("general.alignment".into());
    assert_eq!(keys, expected);
    let get = |k: &str| {
        dump["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == k)
            .map(|e| e[2].clone())
    };
    assert_eq!(get("str"), Some(serde_json::json!("héllo")));
    assert_eq!(get("i64"), Some(serde_json::json!(i64::MIN)));
    assert_eq!(get("general.alignment"), Some(serde_json::json!(64)));
    let tensors = dump["tensors"].as_array().unwrap();
    for ((d, b), t) in ts.iter().zip(tensors) {
        assert_eq!(t[0].as_str(), Some(d.name.as_str()));
        assert_eq!(t[1].as_u64(), Some(u64::from(d.ttype.id())));
        assert_eq!(t[4].as_u64(), Some(b.len() as u64));
        assert_eq!(t[5].as_u64(), Some(weighted_sum(b)));
        assert_eq!(t[3].as_u64().map(|o| o % 64), Some(0));
    }
}

#[test]
fn rewriting_a_real_file_is_byte_identical_in_content() {
    let src = GgufFile::open(shared("data/models/glassllm-en-f16.gguf")).unwrap();
    let descs: Vec<TensorDesc> = src
        .tensor_infos()
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), t.dims.clone(), t.ttype.known().unwrap()))
        .collect();
    let mut w = GgufWriter::options()
        .create_in_memory(src.metadata(), descs)
        .unwrap();
    for t in src.tensors() {
        let t = t.unwrap();
        w.write_tensor(&t.info.name, t.bytes).unwrap();
    }
    let bytes = w.finish_to_vec().unwrap();
    let back = GgufFile::from_bytes(bytes, "mem").unwrap();
    let mut m = src.metadata().clone();
    m.insert("general.alignment", Value::U32(32));
    assert_eq!(back.metadata(), &m);
    for (a, b) in src.tensors().zip(back.tensors()) {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.info, b.info);
        assert_eq!(a.bytes, b.bytes);
    }
}
