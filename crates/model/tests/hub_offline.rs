//! Loading from the hub cache with HF_HUB_OFFLINE: a fake cache in hf-hub 0.4's layout
//! (`$HF_HOME/hub/models--org--name/{refs/main, snapshots/<commit>/...}`). One test function, since it sets
//! process-wide environment variables.

mod common;

use candle_core::Device;
use shuku_model::{Llama, ModelError};

#[test]
fn offline_hub_load_uses_the_cache_and_fails_clearly_without_it() {
    let home = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = home.path().join("hub/models--shuku-test--tiny");
    let snapshot = repo.join("snapshots").join(commit);
    let model = Llama::random(common::tiny_config(true, false), 21, &Device::Cpu).unwrap();
    model.save_hf_dir(&snapshot, None, false).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();

    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let loaded = Llama::from_hub("shuku-test/tiny", None, &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), model.config());
    assert_eq!(
        loaded.logits_vec(&[1, 2, 3]).unwrap(),
        model.logits_vec(&[1, 2, 3]).unwrap()
    );
    // A commit hash names its snapshot directly.
    assert!(Llama::from_hub("shuku-test/tiny", Some(commit), &Device::Cpu).is_ok());

    match Llama::from_hub("shuku-test/absent", None, &Device::Cpu) {
        Err(ModelError::HubOffline { repo, file, .. }) => {
            assert_eq!(
                (repo.as_str(), file.as_str()),
                ("shuku-test/absent", "config.json")
            );
        }
        other => panic!("expected HubOffline, got {other:?}"),
    }
    std::fs::remove_file(snapshot.join("model.safetensors")).unwrap();
    assert!(matches!(
        Llama::from_hub("shuku-test/tiny", None, &Device::Cpu),
        Err(ModelError::HubOffline { file, .. }) if file == "model.safetensors"
    ));
}
