//! Writing a model folder atomically: everything goes into a hidden temporary folder beside the target,
//! which is renamed into place only once every file is complete. A crash or an error leaves the old folder
//! (or nothing) behind, never half a model; an existing non-empty folder is replaced only when asked.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// A folder being written: files go into [`StagedDir::path`]; [`StagedDir::commit`] puts it in place.
/// Dropping it without committing deletes what was written.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    parent: PathBuf,
    replace: bool,
    tmp: tempfile::TempDir,
}

impl StagedDir {
    /// Starts writing `target`. Fails with [`ModelError::OutputExists`] when `target` is a file or a
    /// non-empty folder and `overwrite` is false.
    pub fn create(target: impl AsRef<Path>, overwrite: bool) -> Result<Self> {
        let target = target.as_ref().to_path_buf();
        let exists = target.exists();
        if exists {
            let non_empty = !target.is_dir()
                || fs::read_dir(&target)
                    .map_err(|e| ModelError::io(&target, e))?
                    .next()
                    .is_some();
            if non_empty && !overwrite {
                return Err(ModelError::OutputExists { path: target });
            }
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| ModelError::io(&parent, e))?;
        let mut builder = tempfile::Builder::new();
        builder.prefix(".shuku-save-");
        // Temporary folders are private by default; the saved model is an ordinary folder.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o777));
        }
        let tmp = builder
            .tempdir_in(&parent)
            .map_err(|e| ModelError::io(&parent, e))?;
        Ok(Self {
            target,
            parent,
            replace: exists,
            tmp,
        })
    }

    /// Where the files are written until [`StagedDir::commit`].
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// The folder the files end up in.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the written folder into place, replacing what was there.
    pub fn commit(self) -> Result<PathBuf> {
        if self.replace && self.target.exists() {
            // Move the old folder aside (into a temp dir that deletes it), then put the new one in place.
            let old = tempfile::Builder::new()
                .prefix(".shuku-old-")
                .tempdir_in(&self.parent)
                .map_err(|e| ModelError::io(&self.parent, e))?;
            fs::rename(&self.target, old.path().join("old"))
                .map_err(|e| ModelError::io(&self.target, e))?;
        }
        let staged = self.tmp.keep();
        fs::rename(&staged, &self.target).map_err(|e| ModelError::io(&self.target, e))?;
        Ok(self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_non_empty_folder_and_keeps_it() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("keep.txt"), "mine").unwrap();
        let err = StagedDir::create(&out, false).unwrap_err();
        assert!(matches!(err, ModelError::OutputExists { .. }), "{err}");
        assert_eq!(fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    }

    #[test]
    fn an_uncommitted_folder_leaves_nothing_and_a_commit_replaces() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        {
            let staged = StagedDir::create(&out, false).unwrap();
            fs::write(staged.path().join("a"), "1").unwrap();
        }
        assert!(!out.exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        let staged = StagedDir::create(&out, false).unwrap();
        fs::write(staged.path().join("a"), "1").unwrap();
        staged.commit().unwrap();
        let staged = StagedDir::create(&out, true).unwrap();
        fs::write(staged.path().join("b"), "2").unwrap();
        staged.commit().unwrap();
        assert!(!out.join("a").exists());
        assert_eq!(fs::read_to_string(out.join("b")).unwrap(), "2");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
