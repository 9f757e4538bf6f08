//! Bad input gets a typed error that names the file and tensor, and leaves no output file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use shuku_gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorDesc};
use shuku_model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
use shuku_quantize::{preset, Imatrix, ImatrixEntry, QuantizeError, Quantizer};
use shuku_quants::QuantType;

fn work_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The embedded base model as an F32 GGUF, converted once.
fn base_f32() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = work_dir().join("base-f32.gguf");
        let options = ExportOptions {
            name: None,
            overwrite: false,
            tokenizer_pre: None,
        };
        convert_hf_dir(
            shuku_testkit::workspace_dir().join("assets/shuku-base"),
            &out,
            &PlainEncoder(OutType::F32),
            &options,
            &mut |_, _, _| {},
        )
        .unwrap();
        out
    })
    .clone()
}

/// A copy of the base model with one tensor's bytes replaced.
fn base_with(name: &str, tag: &str, edit: impl Fn(&mut [u8])) -> PathBuf {
    let src = GgufFile::open(base_f32()).unwrap();
    let out = work_dir().join(format!("base-{tag}.gguf"));
    let descs = src
        .tensor_infos()
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), t.dims.clone(), t.ttype.known().unwrap()))
        .collect();
    let mut w = GgufWriter::options()
        .overwrite(true)
        .create(&out, src.metadata(), descs)
        .unwrap();
    for t in src.tensor_infos() {
        let mut bytes = src.tensor(&t.name).unwrap().bytes.to_vec();
        if t.name == name {
            edit(&mut bytes);
        }
        w.write_tensor(&t.name, &bytes).unwrap();
    }
    w.finish().unwrap()
}

/// An importance matrix with one entry, `blk.0.attn_q.weight`, of `cols` columns.
fn one_entry_imatrix(cols: usize) -> Imatrix {
    let mut m = Imatrix {
        datasets: vec!["x.txt".into()],
        chunk_count: 1,
        chunk_size: 8,
        ..Imatrix::default()
    };
    m.entries.insert(
        "blk.0.attn_q.weight".into(),
        ImatrixEntry {
            sums: vec![1.0; cols],
            counts: vec![8.0],
        },
    );
    m
}

fn out_path(tag: &str) -> PathBuf {
    work_dir().join(format!("out-{tag}.gguf"))
}

fn assert_no_output(path: &Path) {
    assert!(!path.exists(), "{} was written", path.display());
}

#[test]
fn unknown_preset_lists_the_known_ones() {
    let err = preset("Q4_K_X").unwrap_err();
    assert!(matches!(err, QuantizeError::UnknownPreset { .. }));
    assert!(err.to_string().contains("Q4_K_M"), "{err}");
}

#[test]
fn a_type_that_cannot_take_a_row_length_is_refused_before_writing() {
    // Q4_K needs rows of 256: the 768-wide ffn_down takes it, a forced type on a tensor whose row
    // is not a multiple of 256 does not, and an explicit --token-embedding-type has no fallback.
    // A 96-wide embedding cannot take Q4_K (rows of 256), and an explicit
    // --token-embedding-type has no fallback.
    let out = out_path("no-fallback");
    let mut meta = Metadata::new();
    meta.insert("general.architecture", "llama");
    meta.insert("llama.block_count", shuku_gguf::Value::U32(1));
    meta.insert("llama.attention.head_count", shuku_gguf::Value::U32(1));
    let odd = work_dir().join("odd.gguf");
    let mut w = GgufWriter::options()
        .overwrite(true)
        .create(
            &odd,
            &meta,
            vec![TensorDesc::new(
                "token_embd.weight",
                vec![96, 4],
                GgmlType::F32,
            )],
        )
        .unwrap();
    w.write_tensor("token_embd.weight", &[0u8; 96 * 4 * 4])
        .unwrap();
    w.finish().unwrap();
    let err = Quantizer::new(preset("Q4_K_M").unwrap())
        .token_embedding_type(QuantType::Q4_K)
        .run(&odd, &out)
        .unwrap_err();
    match &err {
        QuantizeError::NoFallback {
            tensor, row_length, ..
        } => {
            assert_eq!(tensor, "token_embd.weight");
            assert_eq!(*row_length, 96);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_no_output(&out);
    // The same file under the preset's own rules falls back (Q8_0 for the embedding).
    let ok = out_path("fallback");
    Quantizer::new(preset("Q4_K_M").unwrap())
        .run(&odd, &ok)
        .unwrap();
    let f = GgufFile::open(&ok).unwrap();
    assert_eq!(f.tensor_infos()[0].ttype.known(), Some(GgmlType::Q8_0));
}

#[test]
fn an_imatrix_for_another_model_is_refused() {
    let m_path = work_dir().join("other-imatrix.gguf");
    let m = one_entry_imatrix(128);
    m.save(&m_path, true).unwrap();
    let out = out_path("imatrix-size");
    let err = Quantizer::new(preset("Q4_K_M").unwrap())
        .imatrix_file(&m_path)
        .unwrap()
        .run(base_f32(), &out)
        .unwrap_err();
    match &err {
        QuantizeError::ImatrixMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "blk.0.attn_q.weight");
            assert_eq!((*expected, *found), (256, 128));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("other-imatrix.gguf"), "{err}");
    assert_no_output(&out);

    // Entries under names this model does not have: none applies.
    let mut m2 = m.clone();
    let e = m2.entries.remove("blk.0.attn_q.weight").unwrap();
    m2.entries.insert("model.layers.0.q_proj".into(), e);
    let err = Quantizer::new(preset("Q4_K_M").unwrap())
        .imatrix("other.gguf", m2)
        .run(base_f32(), &out)
        .unwrap_err();
    assert!(
        matches!(err, QuantizeError::ImatrixForAnotherModel { .. }),
        "{err:?}"
    );
    assert_no_output(&out);
}

#[test]
fn a_corrupt_imatrix_names_its_file() {
    let good = work_dir().join("good-imatrix.gguf");
    let m = one_entry_imatrix(256);
    m.save(&good, true).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let bad = work_dir().join("corrupt-imatrix.gguf");
    // (The last 32 bytes may be alignment padding, which a reader does not need.)
    for cut in [10, bytes.len() / 2, bytes.len() - 40] {
        std::fs::write(&bad, &bytes[..cut]).unwrap();
        let err = Imatrix::load(&bad).unwrap_err();
        assert!(
            matches!(err, QuantizeError::BadImatrix { .. }),
            "cut {cut}: {err:?}"
        );
        assert!(err.to_string().contains("corrupt-imatrix.gguf"), "{err}");
    }
    // A legacy file that is not one.
    std::fs::write(&bad, b"\x05\x00\x00\x00garbage").unwrap();
    assert!(matches!(
        Imatrix::load(&bad).unwrap_err(),
        QuantizeError::BadImatrix { .. }
    ));
}

#[test]
fn quantized_input_needs_allow_requantize() {
    let q8 = out_path("q8-input");
    Quantizer::new(preset("Q8_0").unwrap())
        .overwrite(true)
        .run(base_f32(), &q8)
        .unwrap();
    let out = out_path("requant");
    let err = Quantizer::new(preset("Q4_0").unwrap())
        .run(&q8, &out)
        .unwrap_err();
    match &err {
        QuantizeError::Requantize { file, ty, .. } => {
            assert_eq!(file, &q8);
            assert_eq!(*ty, QuantType::Q8_0);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_no_output(&out);
    Quantizer::new(preset("Q4_0").unwrap())
        .allow_requantize(true)
        .run(&q8, &out)
        .unwrap();
    assert!(out.exists());
}

#[test]
fn an_existing_output_is_kept_without_overwrite() {
    let out = out_path("exists");
    std::fs::write(&out, b"keep me").unwrap();
    let err = Quantizer::new(preset("Q8_0").unwrap())
        .run(base_f32(), &out)
        .unwrap_err();
    assert!(err.to_string().contains("out-exists.gguf"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    Quantizer::new(preset("Q8_0").unwrap())
        .overwrite(true)
        .run(base_f32(), &out)
        .unwrap();
    assert!(GgufFile::open(&out).is_ok());
}

#[test]
fn a_nan_weight_is_an_error_naming_the_tensor_and_no_file_is_left() {
    let input = base_with("blk.2.ffn_up.weight", "nan", |b| {
        b[40..44].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    let out = out_path("nan");
    let err = Quantizer::new(preset("Q4_K_M").unwrap())
        .run(&input, &out)
        .unwrap_err();
    match &err {
        QuantizeError::NonFinite { tensor, index, .. } => {
            assert_eq!(tensor, "blk.2.ffn_up.weight");
            assert_eq!(*index, 10);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_no_output(&out);
}

#[test]
fn a_truncated_input_is_an_error_naming_the_file() {
    let bytes = std::fs::read(base_f32()).unwrap();
    let cut = work_dir().join("truncated.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = out_path("truncated");
    let err = Quantizer::new(preset("Q8_0").unwrap())
        .run(&cut, &out)
        .unwrap_err();
    assert!(err.to_string().contains("truncated.gguf"), "{err}");
    assert_no_output(&out);
}

#[test]
fn a_bad_tensor_type_override_is_refused() {
    for spec in ["attn_v", "attn_v=q9_9", "(=q8_0"] {
        let err = Quantizer::new(preset("Q4_K_M").unwrap())
            .tensor_type_spec(spec)
            .unwrap_err();
        assert!(
            matches!(err, QuantizeError::BadOverride { .. }),
            "{spec}: {err:?}"
        );
    }
}
