//! A temporary directory with executable scripts, for the tests of the runners.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A temporary directory, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A fresh directory for test `test` of this process.
    pub(crate) fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vadapt-service-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// An executable shell script in the directory.
    pub(crate) fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
